"""Qwen3-Omni Captioner app: detailed captions of any audio.

    python app_captioner.py                          # GPU: Qwen3-Omni-30B-A3B-Captioner; no GPU: tiny model
    python app_captioner.py -c Qwen/Qwen3-Omni-30B-A3B-Captioner --use-transformers
    python app_captioner.py --backend vllm          # or --backend openai --api-base http://host:8000/v1
"""

from __future__ import annotations

import logging
import threading

import cli
from backends.checkpoints import CAPTIONER, TINY_CAPTIONER

DEFAULT_PORT = 7861


def main(argv: list[str] | None = None) -> None:
    from ui import build_captioner_demo, queue_settings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cli.exit_cleanly_on_sigterm()
    args = cli.parse_args(argv, default_checkpoint=CAPTIONER, tiny=TINY_CAPTIONER, default_port=DEFAULT_PORT,
                          description=__doc__)
    cli.check_mcp_server(args)
    args.no_audio = True  # captions are text
    if args.backend == "hybrid":
        args.backend = "vllm"  # the Captioner has no talker: the hybrid's speech half has nothing to do
    with cli.backend_from_args(args, default_checkpoint=CAPTIONER, tiny=TINY_CAPTIONER) as backend:
        demo = build_captioner_demo(backend)
        threading.Thread(target=backend.warm_up, daemon=True, name="warm-up").start()
        demo.queue(**queue_settings(backend.info)).launch(**cli.launch_settings(args))


if __name__ == "__main__":
    main()
