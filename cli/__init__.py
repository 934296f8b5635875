"""The command line of ``app.py`` and ``app_captioner.py``: ``arguments`` parses it, ``settings`` turns it into
the backend's options and Gradio's launch keywords. Above every other package: nothing of the app imports it."""

from cli.arguments import parse_args
from cli.settings import (backend_from_args, backend_options, check_mcp_server, compare_backend_from_args,
                          exit_cleanly_on_sigterm, launch_settings, read_api_keys, read_auth, study_creators)

__all__ = ["backend_from_args", "backend_options", "check_mcp_server", "compare_backend_from_args",
           "exit_cleanly_on_sigterm", "launch_settings", "parse_args", "read_api_keys", "read_auth", "study_creators"]
