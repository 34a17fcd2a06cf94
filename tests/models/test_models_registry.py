import inspect

import pytest

import facemargin.models as M

NAMES = ["iresnet100", "iresnet18", "iresnet34", "iresnet50", "lenetpp", "mobilefacenet",
         "resface28", "smallcnn", "sphere20"]


def test_available_lists_spec_names():
    assert M.available() == NAMES
    al = M.available(aliases=True)
    assert set(NAMES) <= set(al) and "lenet++" in al and "mbf" in al


@pytest.mark.parametrize("name,size", [("lenetpp", (1, 28, 28)), ("sphere20", (3, 112, 96)),
                                       ("resface28", (3, 112, 112)), ("iresnet18", (3, 112, 112)),
                                       ("iresnet100", (3, 112, 112)),
                                       ("mobilefacenet", (3, 112, 112)), ("smallcnn", (3, 32, 32))])
def test_input_size(name, size):
    assert M.input_size(name) == size


def test_unknown_name_lists_available():
    with pytest.raises(ValueError, match="unknown backbone 'resnet9000'.*iresnet50"):
        M.build("resnet9000")
    with pytest.raises(ValueError, match="unknown backbone"):
        M.input_size("nope")


def test_bad_arguments():
    with pytest.raises(ValueError, match="backbone 'sphere20': bad parameters: unknown argument.*'widht'.*it accepts: .*dropout"):
        M.build("sphere20", widht=2)
    for bad in (0, -3, 2.5, True, "512"):
        with pytest.raises(ValueError, match="embedding_size"):
            M.build("lenetpp", embedding_size=bad)
    with pytest.raises(ValueError, match="dropout"):
        M.build("lenetpp", dropout=1.0)
    with pytest.raises(ValueError, match="width"):
        M.build("lenetpp", width=0)


def test_build_sets_arch_and_embedding_and_aliases():
    m = M.build("LeNet++", embedding_size=3, width=0.25)
    assert isinstance(m, M.LeNetPP) and m.arch == "lenetpp" and m.embedding_size == 3
    assert M.build("mbf", 128).arch == "mobilefacenet"


def test_every_constructor_takes_embedding_size_and_dropout():
    for name in NAMES:
        params = inspect.signature(M.BACKBONES.get(name)).parameters
        assert "embedding_size" in params and "dropout" in params, name
