"""``sen2naip publish``: dry run, push against a mocked ``HfApi``, consistency checks, and the read
path by repo id through a local read-only Hub mirror (olah at ``HF_ENDPOINT`` on 127.0.0.1)."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import textwrap
import time
import tomllib
from dataclasses import replace
from pathlib import Path
from unittest import mock

import huggingface_hub
import pytest
import typer
import yaml
from conftest import offline_hf
from huggingface_hub.utils import filter_repo_objects
from space_helpers import SPACE_DIR, make_dataset
from typer.testing import CliRunner

from dataset_builder.publish import (
    DEFAULT_ORG,
    PublishError,
    RepoIds,
    Sources,
    check_staged,
    publish,
    publish_command,
    space_requirements,
    stage_all,
)
from dataset_builder.publish.cards import render_space_readme, space_repos_json
from dataset_builder.publish.ids import commit_message
from dataset_builder.publish.stage import FIDELITY_FILE, LIBRARY_SOURCE, PYPROJECT

ORG = "acme"
IDS = RepoIds(ORG)
COMPONENT_FILES = {
    f"{part}/{name}"
    for part in ("harmonization", "blur", "noise")
    for name in ("README.md", "config.json", "model.safetensors")
}
EXPECTED_FILES = {
    f"{ORG}/sen2naip-blur": {"README.md", "config.json", "model.safetensors"},
    f"{ORG}/sen2naip-harmonization": {"README.md", "config.json", "model.safetensors"},
    f"{ORG}/sen2naip-noise": {"README.md", "config.json", "model.safetensors"},
    f"{ORG}/sen2naip-degradation": {"README.md", "config.json"} | COMPONENT_FILES,
    "space": {"README.md", "app.py", "requirements.txt", "repos.json", "screenshot.png"}
    | {  # the library, beside app.py (the sources, not their bytecode)
        f"sen2naip_hub/{p.relative_to(LIBRARY_SOURCE)}"
        for p in LIBRARY_SOURCE.rglob("*")
        if p.suffix in (".py", ".md") and "__pycache__" not in p.parts
    },
}


@pytest.fixture
def sources(reference_dir, tmp_path, monkeypatch) -> Sources:
    offline_hf(monkeypatch, tmp_path / "hf_home")
    dataset = make_dataset(tmp_path / "sen2naip")
    return Sources(models_dir=reference_dir, dataset_dir=dataset, bench_results=None)


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


def _front(path: Path) -> dict:
    return yaml.safe_load(path.read_text().split("---\n")[1])


def _dataset_files(dataset: Path) -> set[str]:
    return {"README.md", "build.json"} | {str(p.relative_to(dataset)) for p in dataset.glob("*/*.parquet")}


def test_dry_run_writes_every_repo_complete_and_consistent(sources, tmp_path):
    out = tmp_path / "dry"
    staged = publish(ORG, sources, dry_run=out)
    assert [(r.repo_type, r.repo_id) for r in staged] == IDS.all()
    for repo in staged:
        assert repo.folder == out / f"{repo.repo_type}s" / repo.repo_id
        expected = _dataset_files(sources.dataset_dir) if repo.repo_type == "dataset" else None
        expected = expected or EXPECTED_FILES["space" if repo.repo_type == "space" else repo.repo_id]
        assert _files(repo.folder) == expected, repo.repo_id
    assert not [p for p in out.rglob("*") if p.name.startswith(".")]  # no staging leftovers
    fidelity = json.loads(FIDELITY_FILE.read_text())["metrics"]
    for kind, repo_id in IDS.models.items():
        card_path = out / "models" / repo_id / "README.md"
        meta, card = _front(card_path), card_path.read_text()
        assert meta["license"] == "mit" and meta["library_name"] == "sen2naip-hub"
        assert meta["pipeline_tag"] == "image-to-image" and meta["datasets"] == [IDS.dataset]
        assert {"sen2naip", "sentinel-2", "naip"} <= set(meta["tags"])
        assert f'from_pretrained("{repo_id}")' in card
        assert "NAIP only covers the USA: results look like the USA everywhere" in card
        assert "10.1038/s41597-024-04214-y" in card and "opensr-degradation==1.0.1" in card
        assert "B04" in card and "DN / 10000" in card and "@article{aybar2024sen2naip" in card
        assert "$" not in card.replace("$$", "")  # every placeholder filled
        if kind in ("blur", "degradation"):
            assert f"{fidelity['blur']['max_abs_diff']:.2e}" in card
    space = out / "spaces" / IDS.space
    meta = _front(space / "README.md")
    assert meta["sdk"] == "gradio" and meta["sdk_version"] == "6.31.0" and meta["app_file"] == "app.py"
    assert meta["license"] == "mit"
    assert meta["models"] == list(IDS.models.values()) and meta["datasets"] == [IDS.dataset]
    assert json.loads((space / "repos.json").read_text()) == {
        "model": IDS.model("degradation"),
        "dataset": IDS.dataset,
    }
    assert (space / "app.py").read_bytes() == (SPACE_DIR / "app.py").read_bytes()
    dataset_card = (out / "datasets" / IDS.dataset / "README.md").read_text()
    assert f'load_dataset("{IDS.dataset}", "synthetic"' in dataset_card
    assert IDS.space in dataset_card and "results look like the USA everywhere" in dataset_card
    assert _front(out / "datasets" / IDS.dataset / "README.md")["configs"]


def _fitted_models(reference_dir: Path, root: Path) -> Path:
    """The converted repos saved again as ``sen2naip fit`` saves its results (its own card source)."""
    from sen2naip_hub.convert import REPO_NAMES
    from sen2naip_hub.models import BlurModel, Degradation, HarmonizationModel, NoiseModel

    classes = {"blur": BlurModel, "harmonization": HarmonizationModel, "noise": NoiseModel}
    classes["degradation"] = Degradation
    for kind, name in REPO_NAMES.items():
        model = classes[kind].from_pretrained(reference_dir / name)
        model.card_source = "Fitted by `sen2naip fit` (test)."
        model.save_pretrained(root / name)
    return root


def test_a_fitted_model_card_shows_its_own_numbers_not_the_published_ones(sources, reference_dir, tmp_path):
    models = _fitted_models(reference_dir, tmp_path / "fitted")
    report = {
        "results": {"fitted": {"mae": 0.0123, "sam_deg": 1.75}, "published": {"mae": 0.0456, "sam_deg": 2.5}},
        "info": {"pairs": "40 from a test split"},
    }
    report_path = tmp_path / "metrics.json"
    report_path.write_text(json.dumps(report))
    fitted = Sources(models_dir=models, dataset_dir=sources.dataset_dir, bench_results=None)
    with pytest.raises(PublishError, match=r"not the converted published weights.*--fit-report"):
        publish(ORG, fitted, dry_run=tmp_path / "refused")
    staged = publish(ORG, replace(fitted, fit_report=report_path), dry_run=tmp_path / "dry")
    published = json.loads(FIDELITY_FILE.read_text())["metrics"]
    for repo in staged[:4]:
        card = (repo.folder / "README.md").read_text()
        assert (
            "## Fidelity, measured for these weights" in card
            and "Fidelity to the published model" not in card
        )
        assert "| **fitted** (these weights) | 0.0123 | 1.75 |" in card and "40 from a test split" in card
        assert f"{published['blur']['max_abs_diff']:.2e}" not in card and "Not retrained" not in card
        assert "They are **not** the SEN2NAIP authors' published weights" in card
    space = (staged[-1].folder / "README.md").read_text()
    assert "fitted with `sen2naip fit`, not the published ones" in space


def test_dry_run_again_replaces_the_repos(sources, tmp_path):
    out = tmp_path / "dry"
    publish(ORG, sources, dry_run=out)
    (out / "models" / IDS.model("blur") / "stale.txt").write_text("old")
    publish(ORG, sources, dry_run=out)
    assert not (out / "models" / IDS.model("blur") / "stale.txt").exists()


def test_push_uploads_every_file_with_its_commit_message(sources):
    uploads: list[dict] = []

    def fake_upload(*, folder_path, repo_id, repo_type, commit_message, **kwargs):
        files = sorted(_files(Path(folder_path)))
        files = filter_repo_objects(
            files, allow_patterns=kwargs.get("allow_patterns"), ignore_patterns=kwargs.get("ignore_patterns")
        )
        uploads.append(
            {"repo_id": repo_id, "repo_type": repo_type, "message": commit_message, "files": set(files)}
        )
        return f"https://huggingface.co/{repo_id}/commit/0"

    api = mock.MagicMock(spec=huggingface_hub.HfApi)
    api.upload_folder.side_effect = fake_upload
    publish(ORG, sources, api=api)
    assert [(u["repo_type"], u["repo_id"]) for u in uploads] == IDS.all()
    for upload in uploads:
        assert upload["message"] == commit_message(upload["repo_type"], upload["repo_id"])
        assert (
            upload["repo_id"].split("/")[1] in upload["message"] and "sen2naip-hub 0.1.0" in upload["message"]
        )
        if upload["repo_type"] == "dataset":
            assert upload["files"] == _dataset_files(sources.dataset_dir)
        else:
            key = "space" if upload["repo_type"] == "space" else upload["repo_id"]
            assert upload["files"] == EXPECTED_FILES[key], upload["repo_id"]
    assert api.create_repo.call_args_list == [
        *(mock.call(repo_id=i, repo_type="model", exist_ok=True, private=None) for i in IDS.models.values()),
        mock.call(repo_id=IDS.dataset, repo_type="dataset", exist_ok=True, private=None),
        mock.call(repo_id=IDS.space, repo_type="space", exist_ok=True, private=None, space_sdk="gradio"),
    ]


def test_inconsistent_or_incomplete_repos_are_refused(sources, tmp_path):
    staged = stage_all(sources, IDS, tmp_path / "stage")
    readme = staged[-1].folder / "README.md"
    original = readme.read_text()
    readme.write_text(original.replace(f"{ORG}/sen2naip-noise", f"{ORG}/sen2naip-noise-v2"))
    with pytest.raises(PublishError, match="sen2naip-noise-v2"):
        check_staged(staged, IDS)
    readme.write_text(original)
    (staged[0].folder / "model.safetensors").unlink()
    with pytest.raises(PublishError, match=r"acme/sen2naip-blur: missing model.safetensors"):
        check_staged(staged, IDS)


def test_missing_inputs_say_how_to_make_them(sources, tmp_path):
    with pytest.raises(PublishError, match="convert-reference"):
        publish(ORG, Sources(models_dir=tmp_path / "none", dataset_dir=sources.dataset_dir), dry_run=tmp_path)
    with pytest.raises(PublishError, match="sen2naip build"):
        publish(ORG, Sources(models_dir=sources.models_dir, dataset_dir=tmp_path / "none"), dry_run=tmp_path)
    with pytest.raises(PublishError, match="invalid repo id"):
        publish("bad org!", sources, dry_run=tmp_path / "x")
    assert not (tmp_path / "x").exists() or not any((tmp_path / "x").iterdir())


def test_speed_tables_come_from_benchmark_results(sources, tmp_path):
    results = tmp_path / "RESULTS.md"
    results.write_text("# CPU\n\n| what | tiles/s |\n|---|---|\n| degradation 484 px | 3.2 |\n\nprose\n")
    staged = stage_all(Sources(**{**sources.__dict__, "bench_results": results}), IDS, tmp_path / "s")
    card = (staged[3].folder / "README.md").read_text()
    assert "| degradation 484 px | 3.2 |" in card and "prose" not in card


def test_command_line(sources, tmp_path):
    app = typer.Typer()
    app.command()(publish_command)
    args = ["--org", ORG, "--dry-run", str(tmp_path / "cli"), "--models", str(sources.models_dir)]
    result = CliRunner().invoke(app, [*args, "--dataset", str(sources.dataset_dir)])
    assert result.exit_code == 0, result.output
    assert f"wrote   space {IDS.space}" in result.output
    assert (tmp_path / "cli" / "spaces" / IDS.space / "app.py").is_file()


def test_space_requirements_install_the_library_dependencies_without_the_library(sources, tmp_path):
    """A Space installs requirements.txt before its files are copied in: no path or git requirement,
    every dependency of pyproject.toml as pinned there, the Space's own, and not gradio (sdk)."""
    staged = stage_all(sources, IDS, tmp_path / "stage")
    text = (staged[-1].folder / "requirements.txt").read_text()
    assert text == space_requirements()
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    builder = project["optional-dependencies"]["builder"]
    builder_datasets = next(r for r in builder if r.startswith("datasets"))
    assert lines == [*project["dependencies"], builder_datasets]
    assert not [line for line in lines if "git+" in line or "/" in line or line.startswith("gradio")]


def test_staged_space_runs_on_its_own_copy_of_the_library(sources, reference_dir, tmp_path):
    """``app.py`` of the staged Space imports the copied ``sen2naip_hub`` (its folder comes first on
    ``sys.path``, as when a Space runs ``python app.py``) and degrades with the published model."""
    space = stage_all(sources, IDS, tmp_path / "stage")[-1].folder
    script = textwrap.dedent(
        f"""
        import sys, torch
        sys.path.insert(0, {str(space)!r})
        import app, sen2naip_hub
        model = app.load_model({str(reference_dir / "sen2naip-degradation")!r})
        lr = model(torch.rand(1, 4, 64, 64), noise=False).lr
        print(sen2naip_hub.__file__, tuple(lr.shape))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=space, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    library, shape = done.stdout.strip().split(" ", 1)
    assert Path(library) == space / "sen2naip_hub" / "__init__.py"
    assert shape == "(1, 4, 16, 16)"


def test_committed_space_readme_is_the_render_for_the_default_org():
    ids = RepoIds(DEFAULT_ORG)
    # refresh with: python -m dataset_builder.publish
    assert (SPACE_DIR / "README.md").read_text() == render_space_readme(ids, converted=True)
    assert (SPACE_DIR / "repos.json").read_text() == space_repos_json(ids)
    assert (SPACE_DIR / "screenshot.png").stat().st_size > 10_000


# ---------------------------------------------------------------------------- read path (olah)
READ_BACK = textwrap.dedent(
    """
    import json, sys
    from datasets import load_dataset
    from sen2naip_hub import Degradation
    model = Degradation.from_pretrained(sys.argv[1])
    synthetic = load_dataset(sys.argv[2], "synthetic")
    row = next(iter(synthetic.values()))[0]
    print(json.dumps({"scale": model.scale, "rows": sum(len(s) for s in synthetic.values()),
                      "hr_shape": [len(row["hr"]), len(row["hr"][0]), len(row["hr"][0][0])]}))
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _git_commit_each(repos: list[Path]) -> None:
    for folder in repos:
        for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-qm", "publish dry run"]):
            subprocess.run(
                ["git", "-c", "user.name=test", "-c", "user.email=test@example.com", *args],
                cwd=folder,
                check=True,
            )


def _start_olah(mirrors: Path, workdir: Path) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    config = workdir / "olah.toml"
    config.write_text(
        f'[basic]\nhost = "127.0.0.1"\nport = {port}\nmirror-netloc = "127.0.0.1:{port}"\n'
        f'mirror-lfs-netloc = "127.0.0.1:{port}"\nrepos-path = "{workdir / "cache"}"\n'
        f'mirrors-path = ["{mirrors}"]\n\n[accessibility]\noffline = true\n'
    )
    olah = shutil.which("olah-cli", path=str(Path(sys.executable).parent)) or shutil.which("olah-cli")
    log = (workdir / "olah.log").open("w")
    proc = subprocess.Popen([olah, "-c", str(config)], cwd=workdir, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc, url
        except OSError:
            time.sleep(0.2)
    proc.kill()
    pytest.fail(f"olah did not start; log: {(workdir / 'olah.log').read_text()[-2000:]}")


def test_published_repos_resolve_by_repo_id_through_a_local_hub_mirror(sources, tmp_path):
    pytest.importorskip("olah", reason="olah (read-only Hub mirror) is not installed")
    if not shutil.which("git"):
        pytest.skip("git is needed to serve repos with olah")
    out = tmp_path / "dry"
    staged = publish(ORG, sources, dry_run=out)
    _git_commit_each([repo.folder for repo in staged])
    (tmp_path / "olah").mkdir()
    proc, url = _start_olah(out, tmp_path / "olah")
    try:
        env = {
            "PATH": "/usr/bin:/bin",
            "HF_ENDPOINT": url,
            "HF_HOME": str(tmp_path / "reader_hf_home"),
            "HF_HUB_DISABLE_XET": "1",
            "HF_HUB_DISABLE_TELEMETRY": "1",
        }
        result = subprocess.run(
            [sys.executable, "-c", READ_BACK, IDS.model("degradation"), IDS.dataset],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            cwd=tmp_path,  # no local ./sen2naip folder to shadow the repo id
        )
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert result.returncode == 0, result.stderr[-3000:]
    got = json.loads(result.stdout.strip().splitlines()[-1])
    assert got == {"scale": 4, "rows": 2, "hr_shape": [4, 484, 484]}
