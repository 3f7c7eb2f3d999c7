"""`persist prepare --dataset synthetic-folder`: JPEGs of varied size in the ImageFolder layout, written once."""

import pytest
from torchvision.io import decode_jpeg, read_file

from persist.cli.main import main
from persist.data.synthetic_folder import FolderSpec, write_synthetic_folder
from persist.errors import ConfigError


def test_prepare_writes_an_image_folder_of_varied_sizes(tmp_path, capsys):
    out = tmp_path / "folder"
    args = ["prepare", "--dataset", "synthetic-folder", "--out", str(out), "--images", "12", "--val-images", "4"]
    assert main([*args, "--classes", "3", "--min-size", "40", "--max-size", "80", "--quiet"]) == 0
    assert "wrote" in capsys.readouterr().out
    train = sorted((out / "train").glob("*/*.jpg"))
    assert len(train) == 12 and len(list((out / "val").glob("*/*.jpg"))) == 4
    assert sorted(p.name for p in (out / "train").iterdir()) == ["class000", "class001", "class002"]
    shapes = {tuple(decode_jpeg(read_file(str(p))).shape) for p in train}
    assert len(shapes) > 6, shapes  # sizes and aspect ratios vary
    assert all(c == 3 and min(h, w) >= 30 and max(h, w) <= 80 for c, h, w in shapes), shapes
    assert main([*args, "--classes", "3", "--min-size", "40", "--max-size", "80", "--quiet"]) == 0
    assert "reused" in capsys.readouterr().out
    assert main([*args, "--classes", "4", "--quiet"]) == 2  # the same folder, other parameters: refused


def test_bad_sizes_and_a_foreign_folder_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="min_size=90, max_size=80"):
        FolderSpec(min_size=90, max_size=80)
    (tmp_path / "mine.txt").write_text("not images")
    with pytest.raises(ConfigError, match="not empty"):
        write_synthetic_folder(tmp_path, FolderSpec())
    assert (tmp_path / "mine.txt").read_text() == "not images"
