"""No pickle, no remote code: what jaxcook reads cannot run code, and what it downloads is checked.

- A scan of the package, recipes and scripts (their syntax trees, so comments and strings do not
  count) for pickle-based loaders and for `trust_remote_code` set to anything but False.
- Checkpoints, metrics and the log dir are read with every pickle entry point made to fail.
- A downloaded archive or member whose sha256 differs from the pinned one is refused.
Each check is also run on a sample that breaks the rule, so that the check itself can fail.
"""

from __future__ import annotations

import ast
import hashlib
import io
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PICKLE_MODULES = {"pickle", "_pickle", "cPickle", "dill", "cloudpickle", "joblib", "shelve", "marshal"}
PICKLE_CALLS = {"torch.load", "read_pickle", "load_pickle"}  # torch.load unpickles; pandas' read_pickle


def violations(source: str, name: str = "<sample>") -> list[str]:
    """Every pickle import, pickle-based load, `allow_pickle=True` and truthy `trust_remote_code`."""
    found = []
    for node in ast.walk(ast.parse(source, name)):
        where = f"{name}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Import | ast.ImportFrom):
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            found += [f"{where}: imports {m}" for m in modules if m.split(".")[0] in PICKLE_MODULES]
        if isinstance(node, ast.Call):
            called = ast.unparse(node.func)
            if called in PICKLE_CALLS or called.split(".")[-1] in {"read_pickle"}:
                found.append(f"{where}: calls {called}")
            for kw in node.keywords:
                unsafe = not (isinstance(kw.value, ast.Constant) and kw.value.value in (False, None))
                if kw.arg in ("trust_remote_code", "allow_pickle") and unsafe:
                    found.append(f"{where}: {kw.arg}={ast.unparse(kw.value)}")
        if isinstance(node, ast.Dict):  # {"trust_remote_code": True} passed as **kwargs
            for key, value in zip(node.keys, node.values):
                if isinstance(key, ast.Constant) and key.value == "trust_remote_code":
                    if not (isinstance(value, ast.Constant) and value.value is False):
                        found.append(f"{where}: trust_remote_code={ast.unparse(value)}")
    return found


@pytest.mark.parametrize(
    "sample",
    [
        "import pickle",
        "from cloudpickle import loads",
        "torch.load(path)",
        "np.load(p, allow_pickle=True)",
        "AutoModel.from_pretrained(p, trust_remote_code=True)",
        "load_dataset(name, trust_remote_code=flag)",
        "kwargs = {'trust_remote_code': True}",
    ],
)
def test_the_scan_flags_what_it_forbids(sample):
    assert violations(sample), sample


def test_the_scan_passes_safe_code():
    safe = "np.load(p)\nAutoTokenizer.from_pretrained(p, trust_remote_code=False)\n# import pickle\n"
    assert violations(safe + "s = 'torch.load(x)'") == []


def test_no_pickle_and_no_remote_code_in_the_package_recipes_and_scripts():
    files = [p for d in ("jaxcook", "scripts") for p in sorted((ROOT / d).rglob("*.py"))]
    assert len(files) > 50
    found = [v for p in files for v in violations(p.read_text(encoding="utf-8"), str(p.relative_to(ROOT)))]
    assert found == []


def refuse_unpickling(monkeypatch) -> None:
    """From now on every pickle loader raises (the C module's too, which the Python one wraps)."""
    import _pickle
    import pickle

    def refuse(*args, **kwargs):
        raise AssertionError("something was unpickled")

    for module in (pickle, _pickle):
        for name in ("load", "loads", "Unpickler"):
            monkeypatch.setattr(module, name, refuse)
    with pytest.raises(AssertionError, match="unpickled"):
        pickle.loads(pickle.dumps(1))  # the patch bites


def test_checkpoints_metrics_and_config_are_read_without_pickle(tmp_path, monkeypatch):
    import jaxcook
    from jaxcook.logging import read_metrics

    overrides = {"run.log_dir": str(tmp_path / "run"), "max_steps": 2, "run.save_every": 1}
    jaxcook.run("sft", tiny=True, **overrides)  # also imports transformers & co. (torch uses pickle)
    refuse_unpickling(monkeypatch)
    result = jaxcook.run("sft", tiny=True, **{**overrides, "max_steps": 3})  # restores checkpoint 2
    assert [r["step"] for r in result.metrics if "train/loss" in r] == [2]
    assert read_metrics(tmp_path / "run")[-1]["step"] == 3


def zip_with(member: str, data: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(member, data)
    return buf.getvalue()


def test_an_archive_with_a_wrong_sha256_is_refused_and_removed(tmp_path, monkeypatch):
    from jaxcook import assets

    monkeypatch.setenv("JAXCOOK_CACHE", str(tmp_path))
    good = zip_with("pkg/data.txt", b"real")
    pinned = assets.Asset("pypi", "pkg", "1.0", "pkg-1.0.whl", hashlib.sha256(good).hexdigest(), {})
    monkeypatch.setitem(assets.ASSETS, "test-asset", pinned)
    archive = tmp_path / "archives" / "pkg-1.0.whl"
    archive.parent.mkdir(parents=True)
    archive.write_bytes(zip_with("pkg/data.txt", b"tampered"))  # as a bad mirror would serve it
    with pytest.raises(assets.AssetError, match=r"pkg-1.0.whl: sha256 [0-9a-f]{64} != pinned"):
        assets.archive_path("test-asset")
    assert not archive.exists()
    archive.write_bytes(good)
    assert assets.archive_path("test-asset") == archive


def test_a_member_with_a_wrong_sha256_is_refused(tmp_path, monkeypatch):
    from jaxcook import assets

    monkeypatch.setenv("JAXCOOK_CACHE", str(tmp_path))
    data = zip_with("pkg/data.txt", b"real")
    member_sha = hashlib.sha256(b"something else").hexdigest()
    pinned = assets.Asset(
        "pypi", "pkg", "1.0", "pkg-1.0.whl", hashlib.sha256(data).hexdigest(), {"pkg/data.txt": member_sha}
    )
    monkeypatch.setitem(assets.ASSETS, "test-asset", pinned)
    (tmp_path / "archives").mkdir()
    (tmp_path / "archives" / "pkg-1.0.whl").write_bytes(data)
    with pytest.raises(assets.AssetError, match=r"pkg-1.0.whl:pkg/data.txt: sha256 .* != pinned"):
        assets.fetch("test-asset")
    assert not (tmp_path / "assets" / "test-asset" / ".complete").exists()
