"""Qwen3-Omni web app: chat with text, images, audio and video; hear the reply.

    python app.py                                   # GPU: Qwen3-Omni-30B-A3B-Instruct; no GPU: tiny random model
    python app.py -c Qwen/Qwen3-Omni-30B-A3B-Thinking
    python app.py --backend vllm -tp 2              # fast text from vLLM in this process
    python app.py --backend hybrid                  # vLLM writes, the Transformers talker speaks
    python app.py --backend hybrid --api-base http://gpu-box:8000/v1   # …with the text from a vLLM server
    python app.py --backend openai --api-base http://gpu-box:8000/v1   # a `vllm serve` / vLLM-Omni server
    python app.py --mcp                             # the API as MCP tools too: http://127.0.0.1:7860/gradio_api/mcp/

OpenAI's API is served on the same port (api/): ws://127.0.0.1:7860/v1/realtime (the Realtime protocol) and
http://127.0.0.1:7860/v1/chat/completions, /v1/models; --serve-api-key KEY makes it ask callers for a key.

The official demo's command lines work too (`python app.py -c <ckpt> --use-transformers
--generate-audio --flash-attn2`).
"""

from __future__ import annotations

import contextlib
import logging
import threading

import cli


def main(argv: list[str] | None = None) -> None:
    import api
    from ui import build_demo, queue_settings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cli.exit_cleanly_on_sigterm()
    args = cli.parse_args(argv, description=__doc__)
    cli.check_mcp_server(args)
    creators = cli.study_creators(args)
    compare_or_none = cli.compare_backend_from_args(args) or contextlib.nullcontext()
    with cli.backend_from_args(args) as backend, compare_or_none as compare_with:
        demo = build_demo(backend, args.feedback_file, compare_with, data_dir=args.data_dir,
                          creators=creators)
        # The page is up while the engine compiles; the header says so, and turns wait for it.
        threading.Thread(target=backend.warm_up, daemon=True, name="warm-up").start()
        settings = cli.launch_settings(args)
        # The OpenAI API (/v1/realtime, /v1/chat/completions, /v1/models) on the same server and port (api/): it
        # takes the page's login and the API keys; with neither it is open, like the page.
        routes = api.app_kwargs(backend, login_required=settings["auth"] is not None,
                                api_keys=cli.read_api_keys(args.serve_api_key))
        try:
            demo.queue(**queue_settings(backend.info)).launch(**settings, app_kwargs=routes)
        finally:
            # SIGTERM leaves launch with the server still running: stop it, and with its event loop the team studies'
            # answer under way, before the engines close under it (Ctrl+C has stopped it already).
            demo.close()


if __name__ == "__main__":
    main()
