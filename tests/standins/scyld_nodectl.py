"""Stand-in `scyld-nodectl` (Scyld ClusterWare) keeping its database in $SCYLD_STATE (JSON).

State: {"boot_configs": [...], "nodes": {name: {"name", "mac", "power_uri", "groups",
        "attributes": {...}, "up": bool}}, "fail": {"set": msg}, "reboots": [[style, node]],
        "calls": [argv...]}
Syntax as documented: tool options first (-i/--ids NODE (repeatable), -a/--all, --json, ...),
then the action: `ls|list [-l|--long|-L|--long-long]`, `set NAME=VALUE...`,
`reboot [--soft|--hard]`. Plain `reboot` is soft when the node is up, else hard (power_uri).
A _boot_config naming an unknown boot configuration is refused.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.standins.cli_state import die, known_nodes, locked_state  # noqa: E402

ENV = "SCYLD_STATE"


class Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse prints usage and exits 2: keep that contract
        die(f"scyld-nodectl: error: {message}", 2)


def parser() -> Parser:
    p = Parser(prog="scyld-nodectl")
    p.add_argument("-v", "--verbose", action="count", default=0)
    p.add_argument("-q", "--quiet", action="count", default=0)
    p.add_argument("-c", "--config")
    p.add_argument("--base-url")
    p.add_argument("-u", "--user")
    p.add_argument("--json", action="store_true")
    p.add_argument("--pretty", action="store_true")
    p.add_argument("--no-pretty", action="store_true")
    p.add_argument("--human", action="store_true")
    p.add_argument("--show-uids", action="store_true")
    p.add_argument("-a", "--all", action="store_true")
    p.add_argument("-i", "--ids", action="append", default=[])
    sub = p.add_subparsers(dest="action", required=True, parser_class=Parser)
    for name in ("ls", "list"):
        ls = sub.add_parser(name)
        ls.add_argument("-l", "--long", action="store_true")
        ls.add_argument("-L", "--long-long", action="store_true")
    st = sub.add_parser("set")
    st.add_argument("pairs", nargs="+")
    rb = sub.add_parser("reboot")
    style = rb.add_mutually_exclusive_group()
    style.add_argument("--soft", action="store_true")
    style.add_argument("--hard", action="store_true")
    return p


def select(state: dict, ids: list[str], all_: bool, default_all: bool) -> list[str]:
    if not ids:
        if all_ or default_all:
            return sorted(state["nodes"])
        die("scyld-nodectl: error: select nodes with --ids or --all")
    return known_nodes(state, ids, "Invalid node selector", "Unable to find node(s)")


def human(nodes: dict, long: bool) -> str:
    lines = ["Nodes"]
    for name, node in nodes.items():
        lines.append(f"  {name}")
        if long:
            lines.append("    attributes")
            lines += [f"      {k}: {v}" for k, v in sorted(node["attributes"].items())]
            lines += [f"    {k}: {v}" for k, v in sorted(node.items()) if k not in ("attributes", "up")]
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    args = parser().parse_args(argv)
    with locked_state(ENV) as state:
        state.setdefault("calls", []).append(argv)
        state.setdefault("reboots", [])
        if args.action in state.get("fail", {}):
            die(state["fail"][args.action])
        action = "ls" if args.action == "list" else args.action
        nodes = select(state, args.ids, args.all, default_all=action == "ls")
        if action == "ls":
            shown = {n: {k: v for k, v in state["nodes"][n].items() if k != "up"} for n in nodes}
            if not (args.long or args.long_long):
                shown = {n: {"name": n} for n in nodes}
            print(json.dumps(shown, indent=2) if args.json else human(shown, args.long or args.long_long))
        elif action == "set":
            attrs = {}
            for pair in args.pairs:
                name, eq, value = pair.partition("=")
                if not eq or not name:
                    die(f"Invalid attribute assignment {pair!r}: expected NAME=VALUE")
                attrs[name] = value
            conf = attrs.get("_boot_config")
            if conf is not None and conf not in state["boot_configs"]:
                die(f"Boot configuration {conf!r} does not exist")
            for n in nodes:
                state["nodes"][n]["attributes"].update(attrs)
        elif action == "reboot":
            for n in nodes:
                style = "hard" if args.hard else "soft" if args.soft else (
                    "soft" if state["nodes"][n].get("up", True) else "hard")
                if style == "soft" and not state["nodes"][n].get("up", True):
                    die(f"{n}: soft reboot failed: node is not up")
                state["reboots"].append([style, n])


if __name__ == "__main__":
    main(sys.argv[1:])
