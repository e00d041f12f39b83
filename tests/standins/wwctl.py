"""Stand-in `wwctl` (Warewulf 4) keeping its node registry in $WWCTL_STATE (JSON).

State: {"version": "4.6.0", "images": [...], "profiles": {"default": {"image": X}},
        "nodes": {name: {"profiles": ["default"], "image": X|null}}, "fail": {"node set": msg},
        "power": [[action, node], ...], "calls": [argv...]}
Like the real tool: `--image` exists from 4.6 on, `--container`/-C before (an unknown flag is a
cobra error); `node set` asks for confirmation unless --yes (and, with no terminal, modifies
nothing); unknown nodes and images are errors; `node list -a` prints the merged fields table.
After every call it writes <state>.provision/<node>: the image warewulfd would serve to that
node at its next boot (a test reboot can "boot" it).
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.standins.cli_state import die, known_nodes, locked_state  # noqa: E402

ENV = "WWCTL_STATE"


def version_tuple(text: str) -> tuple[int, int]:
    major, minor = text.split(".")[:2]
    return int(major), int(minor)


def merged_image(state: dict, node: str) -> str:
    n = state["nodes"][node]
    if n.get("image"):
        return n["image"]
    for p in n.get("profiles", []):
        if state["profiles"].get(p, {}).get("image"):
            return state["profiles"][p]["image"]
    return ""


def image_source(state: dict, node: str) -> str:
    n = state["nodes"][node]
    if n.get("image"):
        return "--"
    for p in n.get("profiles", []):
        if state["profiles"].get(p, {}).get("image"):
            return p
    return "--"


def select(state: dict, patterns: list[str]) -> list[str]:
    if not patterns:
        return sorted(state["nodes"])
    return known_nodes(state, patterns, "Error: invalid node pattern", "ERROR  : node(s) not found")


def publish(state: dict) -> None:
    out = Path(os.environ[ENV] + ".provision")
    out.mkdir(exist_ok=True)
    for node in state["nodes"]:
        (out / node).write_text(merged_image(state, node) + "\n")


def split_flags(args: list[str], allowed: dict[str, bool]) -> tuple[dict[str, str | bool], list[str]]:
    """cobra-like: allowed maps flag -> takes a value. Unknown flags are errors."""
    flags: dict[str, str | bool] = {}
    rest: list[str] = []
    i = 0
    while i < len(args):
        a = args[i]
        if a.startswith("-"):
            name, eq, value = a.partition("=")
            if name not in allowed:
                die(f"Error: unknown flag: {name}" if name.startswith("--")
                    else f"Error: unknown shorthand flag: '{name[1:]}' in {a}")
            if allowed[name]:
                if not eq:
                    i += 1
                    if i >= len(args):
                        die(f"Error: flag needs an argument: {name}")
                    value = args[i]
                flags[name] = value
            else:
                flags[name] = True
        else:
            rest.append(a)
        i += 1
    return flags, rest


def node_set(state: dict, args: list[str]) -> None:
    v46 = version_tuple(state["version"]) >= (4, 6)
    allowed = {"--yes": False, "-y": False}
    allowed.update({"--image": True} if v46 else {"--container": True, "-C": True})
    flags, patterns = split_flags(args, allowed)
    if not patterns:
        die("Error: requires at least 1 arg(s), only received 0")
    nodes = select(state, patterns)
    image = flags.get("--image") or flags.get("--container") or flags.get("-C")
    if image and image not in state["images"]:
        die(f"ERROR  : image does not exist: {image}")
    if not (flags.get("--yes") or flags.get("-y")):
        print(f"Are you sure you want to modify {len(nodes)} nodes(s) [y/N]: ", end="")
        if sys.stdin.readline().strip().lower() not in ("y", "yes"):
            return
    for n in nodes:
        if image:
            state["nodes"][n]["image"] = image


def node_list(state: dict, args: list[str]) -> None:
    flags, patterns = split_flags(args, {"-a": False, "--all": False, "-j": False, "--json": False,
                                         "-l": False, "--long": False})
    nodes = select(state, patterns)
    v46 = version_tuple(state["version"]) >= (4, 6)
    field = "ImageName" if v46 else "ContainerName"
    if flags.get("-j") or flags.get("--json"):
        key = "image name" if v46 else "container name"
        raw = {n: {"profiles": state["nodes"][n].get("profiles", []),
                   **({key: state["nodes"][n]["image"]} if state["nodes"][n].get("image") else {})}
               for n in nodes}
        print(json.dumps(raw, indent=2))
    elif flags.get("-a") or flags.get("--all"):
        print(f"{'NODE':<12} {'FIELD':<16} {'PROFILE':<10} VALUE")
        for n in nodes:
            print(f"{n:<12} {'Id':<16} {'--':<10} {n}")
            print(f"{n:<12} {'Profiles':<16} {'--':<10} {','.join(state['nodes'][n].get('profiles', []))}")
            print(f"{n:<12} {field:<16} {image_source(state, n):<10} {merged_image(state, n) or '--'}")
            print(f"{n:<12} {'Kernel.Args':<16} {'default':<10} quiet crashkernel=no")
    else:
        print(f"{'NODE NAME':<12} PROFILES")
        for n in nodes:
            print(f"{n:<12} {','.join(state['nodes'][n].get('profiles', []))}")


def power(state: dict, args: list[str]) -> None:
    if not args or args[0] not in ("on", "off", "cycle", "reset", "soft", "status"):
        die(f"Error: unknown command {args[0] if args else ''!r} for \"wwctl power\"")
    for n in select(state, args[1:] or die("Error: requires at least 1 arg(s), only received 0")):
        state["power"].append([args[0], n])


def main(argv: list[str]) -> None:
    with locked_state(ENV) as state:
        state.setdefault("calls", []).append(argv)
        state.setdefault("power", [])
        key = " ".join(argv[:2])
        if key in state.get("fail", {}):
            die(state["fail"][key])
        if argv[:1] in (["version"], ["ver"]):
            label = "wwctl version:\t" if version_tuple(state["version"]) >= (4, 4) else "Version:\t"
            print(f"{label} {state['version']}")
        elif argv[:2] == ["node", "set"]:
            node_set(state, argv[2:])
        elif argv[:2] in (["node", "list"], ["node", "ls"]):
            node_list(state, argv[2:])
        elif argv[:1] == ["power"]:
            power(state, argv[1:])
        else:
            die(f"Error: unknown command {' '.join(argv[:2])!r} for \"wwctl\"")
        publish(state)


if __name__ == "__main__":
    main(sys.argv[1:])
