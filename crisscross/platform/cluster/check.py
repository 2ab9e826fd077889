"""`crisscross cluster check cluster.yaml`: Ray's own schema, then the project's security rules.

Rules: nothing but SSH reachable from outside the cluster (no security-group rule opens another
port, or every protocol, to an address range or a prefix list); neither the Ray dashboard nor the
MLflow server listening on every interface; Ray token authentication on for every node
(RAY_AUTH_MODE=token, the token file copied from ~/.ray/auth_token, never written into the
file); no credentials in the file; the pinned Ray image and this package on every node; the
shared storage named exactly once.
"""

from __future__ import annotations

import copy
import logging
import re
from pathlib import Path
from typing import Any

import yaml

RAY_IMAGE = re.compile(r"^rayproject/ray:2\.60\.\d+-py311-(cpu|gpu|cu\d+)$")
SECRET_PATTERNS = (
    (re.compile(r"AKIA[0-9A-Z]{16}"), "an AWS access key id"),
    (re.compile(r"aws_secret_access_key|aws_session_token", re.I), "AWS keys"),
    (re.compile(r"RAY_AUTH_TOKEN\s*=\s*\S"), "a Ray token written into the file"),
    (re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"), "a private key"),
    # a value written in; read from a file or a variable ($(cat ...), $VAR) is fine
    (
        re.compile(r"MLFLOW_TRACKING_(PASSWORD|TOKEN)\s*=\s*(?![\"']?\$)", re.I),
        "MLflow credentials",
    ),
)
TOKEN_PATH = "~/.ray/auth_token"
PASSWORD_PATH = "~/.crisscross/mlflow_password"


def load_cluster(path: str | Path) -> tuple[dict[str, Any], str]:
    text = Path(path).read_text()
    config = yaml.safe_load(text)
    if not isinstance(config, dict):
        raise ValueError(f"{path}: not a YAML mapping")
    return config, text


def schema_problems(config: dict[str, Any]) -> list[str]:
    """Ray's cluster-config schema, after Ray fills in its provider defaults (no cloud calls)."""
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    logging.getLogger("ray.autoscaler._private.util").setLevel(logging.WARNING)  # its notes
    try:
        validate_config(prepare_config(copy.deepcopy(config)))
    except jsonschema.ValidationError as exc:
        where = ".".join(str(p) for p in exc.absolute_path) or "(top level)"
        return [f"{where}: {exc.message} (Ray's cluster schema)"]
    except (ValueError, KeyError, RuntimeError) as exc:
        return [f"Ray rejects the config: {exc}"]
    return []


def _commands(config: dict[str, Any]) -> dict[str, list[str]]:
    keys = ("initialization_commands", "setup_commands", "head_setup_commands")
    keys += ("worker_setup_commands", "head_start_ray_commands", "worker_start_ray_commands")
    found = {k: [str(c) for c in config.get(k) or []] for k in keys}
    for name, node in (config.get("available_node_types") or {}).items():
        for key in ("initialization_commands", "worker_setup_commands"):
            found[f"available_node_types.{name}.{key}"] = [str(c) for c in node.get(key) or []]
    return found


def _rule_problem(rule: dict[str, Any]) -> str | None:
    """What an inbound rule opens beyond SSH to addresses outside the cluster, or None."""
    sources = [r.get("CidrIp") for r in rule.get("IpRanges") or []]
    sources += [r.get("CidrIpv6") for r in rule.get("Ipv6Ranges") or []]
    sources += [f"prefix list {p.get('PrefixListId')}" for p in rule.get("PrefixListIds") or []]
    if not sources:
        return None
    protocol = str(rule.get("IpProtocol", "tcp")).lower()
    ports = (rule.get("FromPort"), rule.get("ToPort"))
    if protocol in ("-1", "all"):  # AWS ignores the ports: every protocol, every port
        opened = "every protocol and port"
    elif protocol in ("tcp", "6") and ports == (22, 22):
        return None
    else:
        named = "" if protocol in ("tcp", "6") else f"{protocol} "
        opened = f"{named}ports {ports[0]}-{ports[1]}"
    return (
        f"provider.security_group.IpPermissions opens {opened} to {', '.join(map(str, sources))}"
        ": only SSH (22) may be reachable from outside; reach the dashboard and MLflow through "
        "an SSH tunnel"
    )


def _wildcard_binds(command: str) -> list[str]:
    """The servers in `command` told to listen on every interface."""
    from crisscross.platform.cluster.tracking_server import listens_everywhere

    found = []
    for what, pattern in (
        ("the MLflow server", r"mlflow\s+(?:server|ui)\b.*?--host(?:\s*=\s*|\s+)(\S*)"),
        ("the Ray dashboard", r"ray\s+start\b.*?--dashboard-host(?:\s*=\s*|\s+)(\S*)"),
    ):
        for match in re.finditer(pattern, command, re.S):
            if listens_everywhere(match.group(1).strip("'\"")):
                found.append(what)
    return found


def exposure_problems(config: dict[str, Any]) -> list[str]:
    """Security-group rules reachable from outside the cluster: SSH only; servers on the
    nodes bound to a private or loopback address."""
    problems = []
    rules = (config.get("provider") or {}).get("security_group", {}).get("IpPermissions") or []
    problems += [p for p in map(_rule_problem, rules) if p]
    for name, node in (config.get("available_node_types") or {}).items():
        if (node.get("node_config") or {}).get("SecurityGroupIds"):
            problems.append(
                f"available_node_types.{name}.node_config.SecurityGroupIds: a security group of "
                "your own cannot be checked here; leave it to the launcher's SSH-only group"
            )
    for key, commands in _commands(config).items():
        for command in commands:
            problems += [
                f"{key}: {what} listens on every interface; bind it to the node's private "
                "address (MLflow) or 127.0.0.1 (the dashboard) and use an SSH tunnel"
                for what in _wildcard_binds(command)
            ]
    return problems


def token_problems(config: dict[str, Any]) -> list[str]:
    """Token authentication on every node, the token copied in rather than written."""
    problems = []
    docker = config.get("docker") or {}
    options = " ".join(str(o) for o in docker.get("run_options") or [])
    commands = _commands(config)
    starts = " ".join(commands["head_start_ray_commands"] + commands["worker_start_ray_commands"])
    if "RAY_AUTH_MODE=token" not in options and "RAY_AUTH_MODE=token" not in starts:
        problems.append(
            "token authentication is not switched on for every node: add --env "
            "RAY_AUTH_MODE=token to docker.run_options"
        )
    if re.search(r"RAY_AUTH_MODE\s*=\s*disabled", options + starts):
        problems.append("RAY_AUTH_MODE=disabled switches token authentication off")
    mounts = config.get("file_mounts") or {}
    if not any(str(src).strip() == TOKEN_PATH for src in mounts.values()):
        problems.append(
            f"file_mounts does not copy {TOKEN_PATH} (from `ray get-auth-token --generate`) to "
            "the nodes: they cannot authenticate to each other"
        )
    return problems


def tracking_problems(config: dict[str, Any]) -> list[str]:
    """The head's MLflow server behind its basic-auth app, its password copied to every node."""
    head = " ".join(_commands(config)["head_start_ray_commands"])
    problems = []
    for match in re.finditer(r"crisscross\s+cluster\s+tracking-server\b[^&;|)]*", head):
        if "--auth" not in match.group(0):
            problems.append(
                "head_start_ray_commands: the MLflow server runs without --auth: anyone who "
                "reaches it reads and changes every run"
            )
    mounts = config.get("file_mounts") or {}
    if "--auth" in head and not any(str(v).strip() == PASSWORD_PATH for v in mounts.values()):
        problems.append(
            f"file_mounts does not copy {PASSWORD_PATH} (the MLflow server's password) to the "
            "nodes: their jobs cannot sign in"
        )
    return problems


def secret_problems(text: str) -> list[str]:
    return [
        f"line {text[: m.start()].count(chr(10)) + 1}: {what}: use instance profiles or the "
        "environment, never the file"
        for pattern, what in SECRET_PATTERNS
        for m in pattern.finditer(text)
    ]


def stack_problems(config: dict[str, Any]) -> list[str]:
    """The pinned Ray image everywhere, this package installed, the storage named once."""
    problems = []
    docker = config.get("docker") or {}
    images = {"docker.image": docker.get("image"), "docker.head_image": docker.get("head_image")}
    images["docker.worker_image"] = docker.get("worker_image")
    for name, node in (config.get("available_node_types") or {}).items():
        images[f"available_node_types.{name}.docker.worker_image"] = (node.get("docker") or {}).get(
            "worker_image"
        )
    for key, image in images.items():
        if image is not None and not RAY_IMAGE.match(str(image)):
            problems.append(f"{key}: {image} is not a rayproject/ray 2.60 image for Python 3.11")
    setup = " ".join(_commands(config)["setup_commands"])
    if not re.search(r"pip install [^;&|]*crisscross", setup):
        problems.append("setup_commands do not pip install this package on every node")
    named = re.findall(r"CRISSCROSS_STORAGE=", setup)
    if len(named) != 1:
        problems.append(
            f"setup_commands name CRISSCROSS_STORAGE {len(named)} times: name the shared storage "
            "exactly once"
        )
    return problems + _cpu_resource_problems(config, setup)


def _cpu_resource_problems(config: dict[str, Any], setup: str) -> list[str]:
    """The resource named in CRISSCROSS_CPU_RESOURCE must be on a node type: probing and
    prepare ask for it, and would wait for ever for a node that never comes."""
    problems = []
    types = config.get("available_node_types") or {}
    for name in re.findall(r"CRISSCROSS_CPU_RESOURCE=['\"]?([\w:.-]+)", setup):
        if not any(name in ((t or {}).get("resources") or {}) for t in types.values()):
            problems.append(
                f"setup_commands set CRISSCROSS_CPU_RESOURCE={name}, but no node type in "
                f"available_node_types has {name} in its resources: probing and prepare would "
                f"wait for ever (add it to the CPU worker type, e.g. resources: {{{name}: 1}})"
            )
    return problems


def check_cluster(path: str | Path) -> list[str]:
    """Every problem found in the cluster file; empty when it is fit to `ray up`."""
    config, text = load_cluster(path)
    return (
        schema_problems(config)
        + exposure_problems(config)
        + token_problems(config)
        + tracking_problems(config)
        + secret_problems(text)
        + stack_problems(config)
    )
