"""A real agent process: the runtime and core with the MQTT publisher as its only adapter."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

from agent.adapters.mqtt import MqttPublisher
from agent.config import Config, load_config
from agent.runtime import Adapters, Runtime


def _build(cfg: Config) -> Adapters:
    assert cfg.mqtt is not None
    return Adapters(actuators=[MqttPublisher(cfg.agent_id, cfg.mqtt)])


def main(path: str) -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    cfg = load_config(Path(path))
    asyncio.run(Runtime(cfg, _build, config_path=Path(path)).run())


if __name__ == "__main__":
    main(sys.argv[1])
