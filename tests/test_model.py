import torch

from persist.training.models import make_model, parameter_count, reduced_alexnet


def test_paper_model_shape_and_size():
    model = reduced_alexnet(1.0)
    convs = [m for m in model if isinstance(m, torch.nn.Conv2d)]
    assert [c.kernel_size[0] for c in convs] == [11, 5, 3, 3, 3]
    assert [c.out_channels for c in convs] == [64, 192, 384, 256, 256]
    assert all(c.stride == (1, 1) for c in convs)
    linears = [m for m in model if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(4096, 256), (256, 10)]
    assert sum(isinstance(m, torch.nn.MaxPool2d) for m in model) == 3
    assert 3_400_000 < parameter_count(model) < 3_600_000
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_width_scales_channels():
    small = reduced_alexnet(0.25)
    assert [m.out_channels for m in small if isinstance(m, torch.nn.Conv2d)] == [16, 48, 96, 64, 64]
    assert small(torch.zeros(1, 3, 32, 32)).shape == (1, 10)


def test_same_seed_same_weights():
    a, b = (
        make_model("paper-alexnet", 10, (3, 32, 32), 7, torch.device("cpu"), 0.25),
        make_model("paper-alexnet", 10, (3, 32, 32), 7, torch.device("cpu"), 0.25),
    )
    c = make_model("paper-alexnet", 10, (3, 32, 32), 8, torch.device("cpu"), 0.25)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    assert not torch.equal(next(a.parameters()), next(c.parameters()))
