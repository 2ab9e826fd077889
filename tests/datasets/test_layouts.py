"""Layout readers on synthetic copies of each dataset, and on damaged layouts."""

from __future__ import annotations

import shutil
from collections import Counter

import pytest

from crisscross.datasets.fs import Tree
from crisscross.datasets.layouts import LayoutError, create_layout
from crisscross.datasets.layouts.kinetics import kinetics_sound_classes


def scan(name, root, **options):
    return create_layout(name, **options).scan(Tree(str(root)))


def test_kinetics_sound_class_list_is_shipped_with_its_source():
    classes = kinetics_sound_classes()
    assert len(classes) == 33 and len(set(classes)) == 33
    assert {"playing bagpipes", "tapping pen", "shoveling snow"} <= set(classes)


def test_kinetics_layout(synthetic):
    listing = scan("kinetics_sound", synthetic["kinetics_sound"])
    assert len(listing.entries) == 15
    assert Counter(e.split for e in listing.entries) == {"train": 12, "val": 3}
    for entry in listing.entries:
        split, cls, name = entry.rel.split("/")
        assert (entry.split, entry.label_name, listing.classes[entry.label]) == (split, cls, cls)
        stem = name.removesuffix(".mp4")
        assert len(stem) == 11 + 14 and stem[11] == "_"  # <youtube_id>_<start:06d>_<end:06d>
    assert any("have no videos" in note for note in listing.notes)


def test_kinetics_sound_keeps_only_its_classes(synthetic, tmp_path):
    root = tmp_path / "k"
    shutil.copytree(synthetic["kinetics_sound"], root)
    (root / "train" / "abseiling").mkdir()
    shutil.copy(
        next((root / "train" / "bowling").glob("*.mp4")),
        root / "train" / "abseiling" / "x_000001_000011.mp4",
    )
    assert all(e.label_name != "abseiling" for e in scan("kinetics_sound", root).entries)
    assert any(e.label_name == "abseiling" for e in scan("kinetics400", root).entries)
    custom = tmp_path / "classes.txt"
    custom.write_text("# mine\nbowling\n")
    listing = scan("kinetics_sound", root, classes_file=str(custom))
    assert listing.classes == ["bowling"] and {e.label_name for e in listing.entries} == {"bowling"}


def test_kinetics_csv_names_missing_files(bad_kinetics):
    root, files = bad_kinetics
    entries = {e.rel: e for e in scan("kinetics_sound", root).entries}
    missing = entries[files["listed_missing"]]
    assert (missing.status, missing.reason) == (
        "missing_on_disk",
        "listed in annotations/train.csv but not on disk",
    )


def test_audioset_layout(synthetic):
    listing = scan("audioset", synthetic["audioset"])
    assert len(listing.entries) == 15
    assert {e.split for e in listing.entries} == {"balanced_train", "eval"}
    assert all(e.label_name.startswith("/m/synth") and e.status is None for e in listing.entries)


def _audioset_tree(root, csvs: dict[str, str], files: list[str]) -> None:
    for rel, text in csvs.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    for rel in files:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"")


def test_audioset_segments_match_the_files_row_by_row(tmp_path):
    """Comments anywhere, labels holding commas, fields with or without a space after the comma,
    a YTID listed twice (the last row counts), files named <YTID>_<start>.mp4 or <YTID>.mp4, a
    CSV under csv/, a split on disk with no CSV, a folder that is no AudioSet split."""
    _audioset_tree(
        tmp_path,
        {
            "balanced_train_segments.csv": "# created\n# YTID, start, end, labels\n"
            'aaaaaaaaaaa, 30.000, 40.000, "/m/01,/m/02"\n'
            "# a comment in the middle\n"
            'bbbbbbbbbbb,0.000,10.000,"/m/03"\n'
            'ccccccccccc, 0.000, 10.000, "/m/04"\n'
            'aaaaaaaaaaa, 50.000, 60.000, "/m/05"\n'
            '\nddddddddddd, 0.000, 10.000, "/m/06,/m/07,/m/08"\n',
            "csv/eval_segments.csv": 'eeeeeeeeeee, 1.000, 11.000, "/m/09"\n',
        },
        [
            "balanced_train/aaaaaaaaaaa_30000.mp4",
            "balanced_train/bbbbbbbbbbb.mp4",
            "balanced_train/ddddddddddd_0.mkv",
            "balanced_train/zzzzzzzzzzz_0.mp4",
            "eval/eeeeeeeeeee_1000.mp4",
            "unbalanced_train/uuuuuuuuuuu_0.mp4",
            "extra/xxxxxxxxxxx_0.mp4",
            "balanced_train/notes.txt",
        ],
    )
    got = [
        (e.rel, e.label_name, e.split, e.status, e.reason)
        for e in scan("audioset", tmp_path).entries
    ]
    assert got == [
        ("balanced_train/aaaaaaaaaaa_30000.mp4", "/m/05", "balanced_train", None, ""),
        ("balanced_train/bbbbbbbbbbb.mp4", "/m/03", "balanced_train", None, ""),
        ("balanced_train/ddddddddddd_0.mkv", "/m/06,/m/07,/m/08", "balanced_train", None, ""),
        ("balanced_train/zzzzzzzzzzz_0.mp4", "", "balanced_train", "unlisted",
         "zzzzzzzzzzz is not in balanced_train_segments.csv"),
        ("eval/eeeeeeeeeee_1000.mp4", "/m/09", "eval", None, ""),
        ("extra/xxxxxxxxxxx_0.mp4", "", "extra", None, ""),
        ("unbalanced_train/uuuuuuuuuuu_0.mp4", "", "unbalanced_train", "unlisted",
         "uuuuuuuuuuu is not in unbalanced_train_segments.csv"),
        ("balanced_train/ccccccccccc.mp4", "/m/04", "balanced_train", "missing_on_disk",
         "listed in balanced_train_segments.csv but not on disk"),
    ]  # fmt: skip


def test_audioset_without_segment_rows_lists_the_files_as_they_are(tmp_path):
    _audioset_tree(
        tmp_path,
        {"eval_segments.csv": "# only comments\n"},
        ["eval/eeeeeeeeeee_0.mp4", "balanced_train/bbbbbbbbbbb_0.mp4"],
    )
    entries = scan("audioset", tmp_path).entries
    assert [(e.rel, e.status) for e in entries] == [
        ("balanced_train/bbbbbbbbbbb_0.mp4", None),
        ("eval/eeeeeeeeeee_0.mp4", None),
    ]


def test_a_segments_row_without_four_fields_names_the_file_and_the_row(tmp_path):
    _audioset_tree(
        tmp_path,
        {"eval_segments.csv": 'eeeeeeeeeee, 1.000, 11.000, "/m/09"\nfffffffffff, 2.000\n'},
        ["eval/eeeeeeeeeee_0.mp4"],
    )
    with pytest.raises(LayoutError) as raised:
        scan("audioset", tmp_path)
    assert str(raised.value) == (
        f"{tmp_path}/eval_segments.csv: expected YTID, start_seconds, end_seconds, "
        "positive_labels; got ['fffffffffff', '2.000']"
    )


def test_ucf101_layout(synthetic):
    listing = scan("ucf101", synthetic["ucf101"])
    assert listing.classes == ["ApplyEyeMakeup", "Archery", "BabyCrawling"]
    assert len(listing.entries) == 15 and all(e.status is None for e in listing.entries)
    for entry in listing.entries:
        group = int(entry.rel.split("_g")[1][:2])
        for n in (1, 2, 3):  # the official rule: split n tests groups 7(n-1)+1 .. 7n
            assert entry.folds[n] == ("test" if 7 * (n - 1) < group <= 7 * n else "train")


def test_ucf101_problems_land_with_reasons(synthetic, tmp_path):
    root = tmp_path / "ucf"
    shutil.copytree(synthetic["ucf101"], root)
    victim = next((root / "UCF-101" / "Archery").glob("*.avi"))
    victim.unlink()
    (root / "UCF-101" / "Juggling").mkdir()
    shutil.copy(
        next((root / "UCF-101" / "BabyCrawling").glob("*.avi")),
        root / "UCF-101" / "Juggling" / "v_Juggling_g01_c01.avi",
    )
    entries = {e.rel: e for e in scan("ucf101", root).entries}
    gone = entries[f"UCF-101/Archery/{victim.name}"]
    assert gone.status == "missing_on_disk" and "but not on disk" in gone.reason
    stray = entries["UCF-101/Juggling/v_Juggling_g01_c01.avi"]
    assert (stray.status, stray.reason, stray.label) == (
        "unlisted",
        "class folder 'Juggling' is not in classInd.txt",
        -1,
    )


def test_ucf101_missing_split_files_list_what_is_expected(synthetic, tmp_path):
    root = tmp_path / "ucf"
    shutil.copytree(synthetic["ucf101"], root)
    (root / "ucfTrainTestlist" / "testlist02.txt").unlink()
    (root / "ucfTrainTestlist" / "classInd.txt").unlink()
    with pytest.raises(LayoutError) as err:
        scan("ucf101", root)
    message = str(err.value)
    assert "not in the UCF101 layout" in message
    assert "ucfTrainTestlist/classInd.txt (class index)" in message
    assert "ucfTrainTestlist/testlist02.txt (split 2 test videos)" in message


def test_hmdb51_layout(synthetic):
    listing = scan("hmdb51", synthetic["hmdb51"])
    assert listing.classes == ["brush_hair", "cartwheel", "catch"]
    assert all(set(e.folds) == {1, 2, 3} for e in listing.entries)
    assert {v for e in listing.entries for v in e.folds.values()} == {"train", "test"}


def test_hmdb51_without_split_files(tmp_path):
    (tmp_path / "brush_hair").mkdir()
    (tmp_path / "brush_hair" / "a.avi").write_bytes(b"x")
    with pytest.raises(LayoutError, match=r"testTrainMulti_7030_splits/<class>_test_split1.txt"):
        scan("hmdb51", tmp_path)


def test_esc50_layout(synthetic):
    listing = scan("esc50", synthetic["esc50"])
    assert listing.classes == ["dog", "rooster", "pig"]
    assert Counter(e.fold for e in listing.entries) == {1: 3, 2: 3, 3: 3, 4: 3, 5: 3}
    for entry in listing.entries:
        fold, _, _, target = entry.rel.removeprefix("audio/").removesuffix(".wav").split("-")
        assert (entry.fold, entry.label) == (int(fold), int(target))


def test_not_a_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such folder"):
        Tree(str(tmp_path / "nope"))
