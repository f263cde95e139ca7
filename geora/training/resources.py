"""Everything a run would fetch from the hub, checked at once before anything loads: an
offline start names every missing resource (model, training data, each evaluation data
set) in one message, each with its local override, instead of one per attempt."""
from __future__ import annotations

from pathlib import Path

from geora.models import HubUnavailableError, cached_snapshot, hub_reachable
from geora.training.settings import RunSettings


def hub_needs(settings: RunSettings) -> list[tuple[str, str, str, str]]:
    """(what, hub id, repo type, override) for each hub resource the config reads without a
    local copy given: the model, the training data (a training run), each evaluation task's
    data set (without eval.data_dir)."""
    from geora.evaluation.catalog import task_info

    needs = []
    model, data, evaluation = settings.model, settings.data, settings.eval
    if not (model.local_path or model.bundled or model.random_init) and model.hub_id:
        needs.append(("model", model.hub_id, "model", "model.local_path=/path/to/model"))
    if settings.trains and data.source == "hub" and not data.local_path:
        needs.append((f"training data {data.name!r}", str(data.hub_id), "dataset",
                      "data.local_path=/path/to/data"))
    if evaluation.tasks and not evaluation.data_dir:
        for name in evaluation.tasks:
            info = task_info(str(name))
            if info.hub_id:
                files = ", ".join(info.local_files.values())
                needs.append((f"evaluation task {name!r}", info.hub_id, "dataset",
                              f"eval.data_dir=/path/to/folder holding {files}"))
    return needs


def local_path_problems(settings: RunSettings) -> list[str]:
    """A local path that is given but holds nothing usable: one line each."""
    problems = []
    model = settings.model
    if not (model.local_path or model.bundled or model.random_init or model.hub_id):
        problems.append(f"model: model {model.name!r} names no folder; pass "
                        f"model.path=/path/to/model/folder (model=hf) or model.local_path=")
    path = model.local_path
    if path and not (Path(path).expanduser() / "config.json").is_file():
        problems.append(f"model: model.local_path={path!r} is not a Hugging Face model "
                        f"folder (no config.json)")
    elif not path and model.bundled:
        from geora.models import ASSETS_DIR

        if not (ASSETS_DIR / str(model.bundled) / "config.json").is_file():
            problems.append(f"model: bundled model {model.bundled!r} missing at "
                            f"{ASSETS_DIR / str(model.bundled)}")
    path = settings.data.local_path
    if settings.trains and path and not Path(path).expanduser().exists():
        problems.append(f"training data: data.local_path={path!r} does not exist")
    return problems


def check_resources(settings: RunSettings) -> None:
    """HubUnavailableError listing every resource the run cannot reach, or nothing. The hub
    is asked once, and only when something is neither local nor cached."""
    problems = local_path_problems(settings)
    uncached = [n for n in hub_needs(settings) if cached_snapshot(n[1], repo_type=n[2]) is None]
    if uncached and not hub_reachable():
        problems += [f"{what}: {repo_type} {repo_id!r} is not in the local Hugging Face cache; "
                     f"pass {override}" for what, repo_id, repo_type, override in uncached]
    if problems:
        head = ("the hub cannot be reached and " if uncached and len(problems) > 1 else "")
        raise HubUnavailableError(
            f"{head}{len(problems)} resource(s) of this run are missing:\n  - "
            + "\n  - ".join(problems))
