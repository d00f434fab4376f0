"""Detectron2's ``default_setup`` with a quieter console: the long records (the environment dump of
``collect_env_info``, the command line, the config file's contents, ``train_net.py``'s "Model:"
print-out) go to OUTPUT_DIR/log.txt only, unless verbose."""
import logging
import sys

from detectron2.engine import default_setup
from detectron2.utils import comm
from detectron2.utils.file_io import PathManager
from detectron2.utils.logger import setup_logger

__all__ = ["LOG_FILE_ONLY_PREFIXES", "quiet_default_setup"]

#: Records whose message starts with one of these are kept off the console (log.txt has them).
LOG_FILE_ONLY_PREFIXES = ("Environment info:", "Command line arguments:", "Contents of args.config_file=", "Model:\n")


class _LogFileOnly(logging.Filter):
    def filter(self, record):
        return not (isinstance(record.msg, str) and record.msg.startswith(LOG_FILE_ONLY_PREFIXES))


def _console_handlers(logger):
    consoles = (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__)
    return [h for h in logger.handlers if isinstance(h, logging.StreamHandler) and h.stream in consoles]


def quiet_default_setup(cfg, args, verbose: bool = False) -> None:
    """``detectron2.engine.default_setup(cfg, args)``; unless ``verbose``, the console handlers of
    the "detectron2" and "fvcore" loggers drop :data:`LOG_FILE_ONLY_PREFIXES` records.

    Detectron2's ``setup_logger`` is cached by its arguments: called here first with exactly the
    arguments ``default_setup`` uses, it creates the handlers that ``default_setup`` then reuses,
    so the filter is in place before the environment dump is logged."""
    if not verbose:
        output_dir = cfg.train.output_dir
        rank = comm.get_rank()
        if comm.is_main_process() and output_dir:
            PathManager.mkdirs(output_dir)
        for logger in (setup_logger(output_dir, distributed_rank=rank, name="fvcore"),
                       setup_logger(output_dir, distributed_rank=rank)):
            for handler in _console_handlers(logger):
                if not any(isinstance(f, _LogFileOnly) for f in handler.filters):
                    handler.addFilter(_LogFileOnly())
    default_setup(cfg, args)
    if not verbose and comm.is_main_process():
        logging.getLogger("detectron2").info(
            "Environment, command line, config file and model print-out: in log.txt of "
            f"{cfg.train.output_dir} (--verbose also prints them here)"
        )
