import json
import os
from typing import Dict, Optional

from detectron2.utils.file_io import PathManager


def save_eval_results(
    results: Dict,
    output_dir: str,
    iterations_trained=None,
    name: str = "eval_results.json",
    extra: Optional[Dict] = None,
):
    """Write the nested evaluation dict ``{dataset: {task: {metric: value}}}`` of the last evaluation
    (what ``print_csv_format`` prints) to ``output_dir/name``, for the demo and the reports.
    ``extra`` adds top-level keys next to "iterations_trained" and "results" (e.g. the inference
    time per image)."""
    PathManager.mkdirs(output_dir)
    path = os.path.join(output_dir, name)
    extra = dict(extra or {})
    clash = set(extra) & {"iterations_trained", "results"}
    if clash:
        raise ValueError(f"save_eval_results: extra keys {sorted(clash)} would overwrite the standard ones.")
    with PathManager.open(path, "w") as f:
        json.dump({"iterations_trained": iterations_trained, "results": results, **extra}, f, indent=2)
    return path
