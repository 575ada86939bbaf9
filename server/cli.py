"""The ``sluice`` command: ``serve``, ``demo``, ``convert`` and ``rollout``."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

from sluice.converters.artifact.errors import ConfigError
from sluice.converters.artifact.profile import Profile
from sluice.server import __version__
from sluice.server.settings import WORKER_SETTINGS_ENV, Settings, load_settings, settings_json

log = logging.getLogger("sluice")


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )


def serve(settings: Settings) -> None:
    """Run the gateway with uvicorn until SIGINT/SIGTERM (graceful: in-flight requests finish)."""
    if settings.workers > 1:
        serve_workers(settings)
        return
    import uvicorn

    from sluice.server.app import create_app

    app = create_app(settings)
    uvicorn.Server(uvicorn.Config(app, **uvicorn_options(settings))).run()


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """What one worker and many (and the tests' servers) share in their uvicorn configuration."""
    from sluice.server.http.protocol import GuardedProtocol

    return {
        "host": settings.host,
        "port": settings.port,
        "log_level": settings.log_level,
        "access_log": settings.access_log,
        "lifespan": "on",
        # uvicorn hands this to asyncio.wait_for, which takes fractional seconds (0: do not wait).
        "timeout_graceful_shutdown": settings.drain_timeout_s,
        "server_header": False,
        "proxy_headers": settings.proxy_headers,
        # Header and body time-outs and JSON errors for malformed requests (sluice.server.http.protocol).
        "http": GuardedProtocol,
        "timeout_keep_alive": settings.keep_alive_s,
        "limit_concurrency": settings.max_connections,
    }


def serve_workers(settings: Settings) -> None:
    """``settings.workers`` processes on one port under uvicorn's supervisor (it restarts dead ones).

    Each worker builds its own app from the settings validated here (``WORKER_SETTINGS_ENV``); their
    metrics share a fresh directory (prometheus-client multiprocess mode), removed on exit.
    """
    import shutil
    import tempfile

    import uvicorn
    from uvicorn.supervisors import Multiprocess

    from sluice.monitoring.metrics import MULTIPROC_ENV

    metrics_dir = tempfile.mkdtemp(prefix="sluice-metrics-")
    os.environ[MULTIPROC_ENV] = metrics_dir
    os.environ[WORKER_SETTINGS_ENV] = settings_json(settings)
    log.info("%d workers, metrics shared in %s", settings.workers, metrics_dir)
    try:
        config = uvicorn.Config(
            "sluice.server.app:create_app_from_environment",
            factory=True,
            workers=settings.workers,
            **uvicorn_options(settings),
        )
        sock = config.bind_socket()
        # Listen before the workers start (uvicorn.run leaves that to them): a connection made while the
        # workers load their models, or while a dead one is replaced, waits in the backlog instead of
        # being refused.
        sock.listen(config.backlog)
        Multiprocess(config, sockets=[sock]).run()
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


def _serve_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to bind (default 8000)")
    parser.add_argument("--config", type=Path, help="YAML settings file (see docs/configuration.md)")
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    parser.add_argument(
        "--workers", type=int, help="worker processes sharing the port (default 1; docs/operations.md)"
    )


def _settings(args: argparse.Namespace, repository: Path | None) -> Settings:
    return load_settings(
        args.config,
        repository=repository,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        workers=getattr(args, "workers", None),
        rollout_file=getattr(args, "rollout", None),
    )


def _cmd_serve(args: argparse.Namespace) -> int:
    settings = _settings(args, args.repository)
    _configure_logging(settings.log_level)
    if not settings.repository.is_dir():
        raise ConfigError(f"model repository {settings.repository} is not a directory")
    if settings.rollout_file is not None:
        # Refuse a broken rollouts file here, with every problem in one line, rather than as a traceback
        # from the app's start-up. Versions are checked when they load: the file may name one not built yet.
        from sluice.server.rollouts.spec import read_rollouts

        read_rollouts(settings.rollout_file)
    serve(settings)
    return 0


def default_demo_dir() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "sluice" / "demo"


def _cmd_demo(args: argparse.Namespace) -> int:
    from sluice.converters.demo import build_demo_repository

    repository: Path = args.repository or default_demo_dir()
    settings = _settings(args, repository)
    _configure_logging(settings.log_level)
    print(f"building the demo model repository in {repository}", file=sys.stderr)
    build_demo_repository(repository, progress=lambda msg: print(f"  {msg}", file=sys.stderr))
    if args.build_only:
        return 0
    base = f"http://{settings.host}:{settings.port}"
    print(
        f"""
sluice {__version__} serving {repository} on {base}

  curl -s {base}/v2/models/iris/infer -H 'content-type: application/json' \\
    -d '{{"inputs":[{{"name":"input","shape":[1,4],"datatype":"FP32","data":[5.1,3.5,1.4,0.2]}}]}}'
  curl -s {base}/v1/models/iris:predict -d '{{"instances":[[6.7,3.0,5.2,2.3]]}}'

  python - <<'EOF'
  import numpy as np, tritonclient.http as http
  client = http.InferenceServerClient("{settings.host}:{settings.port}")
  x = http.InferInput("input", [1, 30], "FP32"); x.set_data_from_numpy(np.zeros((1, 30), np.float32))
  print(client.infer("breast_cancer", [x]).as_numpy("probabilities"))
  EOF

  metrics: {base}/metrics      repository index: curl -s -X POST {base}/v2/repository/index
""",
        file=sys.stderr,
        flush=True,
    )
    serve(settings)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sluice", description="Model serving and monitoring gateway.")
    parser.add_argument("--version", action="version", version=f"sluice {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("serve", help="serve every model in a repository")
    p.add_argument("--repository", type=Path, help="model repository (default ./models)")
    p.add_argument(
        "--rollout", type=Path, help="rollouts file: routing, shadows, rollouts (docs/rollouts.md)"
    )
    _serve_args(p)
    p.set_defaults(func=_cmd_serve)

    from sluice.server.rollouts.cli import add_rollout_commands

    add_rollout_commands(commands)

    p = commands.add_parser("demo", help="build the bundled demo models and serve them")
    p.add_argument("--repository", type=Path, help=f"where to build them (default {default_demo_dir()})")
    p.add_argument("--build-only", action="store_true", help="build (or reuse) the models, do not serve")
    _serve_args(p)
    p.set_defaults(func=_cmd_demo)

    from sluice.converters.cli import add_arguments, run

    p = commands.add_parser(
        "convert",
        help="convert a scikit-learn model, a LightGBM/XGBoost booster or an .onnx file into a repository",
        description="Convert a fitted scikit-learn model (joblib/pickle file) or a LightGBM/XGBoost booster "
        "file to ONNX, check parity on a sample, and write it as the next version of NAME; or import an "
        ".onnx file. Loading a pickle executes code: only convert files you trust. The gateway itself "
        "never unpickles anything.",
    )
    add_arguments(p)
    p.set_defaults(func=run, calibrate=_calibrate)
    return parser


def _calibrate(profile: Profile) -> dict[str, Any]:
    """The monitor's calibration of a converted profile, stored in it (``sluice.monitoring.stored``)."""
    from sluice.monitoring.stored import calibrate_profile

    return calibrate_profile(profile)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except ConfigError as exc:
        print(f"sluice: {exc.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
