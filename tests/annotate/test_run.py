"""`instvl annotate run`: units back to back in this process; a failed unit fails alone and the command
says so."""

from instvl.annotate.run import AnnotateRunConfig, main
from instvl.config import load_config
from instvl.datasets.manifest import unit_done


def test_a_failed_unit_fails_alone_and_the_command_exits_1_naming_it(make_video, tmp_path, capsys):
    for i in range(4):
        make_video(f"media/clip{i}.mp4", num_frames=6, width=64, height=48, seed=i)
    out = tmp_path / "out"
    cfg = load_config(AnnotateRunConfig, "annotate/fake", [f"input='{tmp_path / 'media'}'", f"output='{out}'",
                                                           "out.sources_per_unit=1"])
    blocker = out / "shards" / "unit-00001-000.parquet"
    blocker.mkdir(parents=True)  # a folder where the second unit's shard must go

    assert main(cfg) == 1
    err = capsys.readouterr().err
    assert "FAILED unit-00001: IsADirectoryError" in err and "unit-00000" not in err
    assert [unit_done(out, f"unit-{i:05d}") for i in range(4)] == [True, False, True, True]
    assert (out / "manifest.json").exists()

    blocker.rmdir()
    assert main(cfg) == 0
    assert all(unit_done(out, f"unit-{i:05d}") for i in range(4))
