import json
import os
from typing import Dict

from detectron2.utils.file_io import PathManager


def save_eval_results(
    results: Dict, output_dir: str, iterations_trained=None, name: str = "eval_results.json"
):
    """Write the nested evaluation dict ``{dataset: {task: {metric: value}}}`` of the last evaluation
    (what ``print_csv_format`` prints) to ``output_dir/name``, for the demo and the reports."""
    PathManager.mkdirs(output_dir)
    path = os.path.join(output_dir, name)
    with PathManager.open(path, "w") as f:
        json.dump({"iterations_trained": iterations_trained, "results": results}, f, indent=2)
    return path
