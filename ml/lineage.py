"""Version-level lineage as a graph: what ``lineage trace`` prints (text, JSON or Graphviz).

``lineage_graph(catalog, asset, version, depth)`` walks ``lineage_edges`` up and down, breadth first,
each version once. The renderers: DESIGN.md, "Module notes".
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ml.catalog import Catalog, CatalogError

Node = tuple[str, str]  # (asset, data_version); landing files are "landing:<path>"


@dataclass
class Walk:
    """One direction of the walk: each node's distance (shortest path) and its next nodes (sorted)."""

    distance: dict[Node, int] = field(default_factory=dict)
    children: dict[Node, list[Node]] = field(default_factory=dict)
    truncated: set[Node] = field(default_factory=set)  # nodes with more beyond the depth limit


@dataclass
class LineageGraph:
    root: Node
    upstream: Walk
    downstream: Walk
    depth: int | None


def resolve_version(catalog: Catalog, asset: str, version: str | None) -> str:
    """The full data version of ``asset`` named by a prefix (default: the latest one)."""
    version = version or catalog.latest_version_of(asset)
    if version is None:
        raise CatalogError(f"no version of {asset!r} in the catalog")
    matches = catalog.query(
        "SELECT DISTINCT data_version FROM asset_versions WHERE asset = ? AND starts_with(data_version, ?)",
        [asset, version],
    )["data_version"].to_list()
    if not matches:
        raise CatalogError(f"{asset}@{version} is not in the catalog")
    if len(matches) > 1:
        raise CatalogError(f"version prefix {version!r} of {asset} is ambiguous: {sorted(matches)}")
    return matches[0]


def _walk(root: Node, graph: dict[Node, set[Node]], depth: int | None) -> Walk:
    walk = Walk(distance={root: 0})
    frontier = [root]
    while frontier:
        nxt: list[Node] = []
        for node in frontier:
            d = walk.distance[node]
            kids = sorted(graph.get(node, ()))
            if depth is not None and d >= depth:
                if kids:
                    walk.truncated.add(node)
                continue
            walk.children[node] = kids
            for kid in kids:
                if kid not in walk.distance:
                    walk.distance[kid] = d + 1
                    nxt.append(kid)
        frontier = nxt
    return walk


def lineage_graph(catalog: Catalog, asset: str, version: str | None = None, depth: int | None = None) -> LineageGraph:
    if depth is not None and depth < 0:
        raise ValueError(f"depth must be >= 0, got {depth}")
    root = (asset, resolve_version(catalog, asset, version))
    edges = catalog.query(
        "SELECT DISTINCT asset, data_version, upstream_asset, upstream_version FROM lineage_edges").rows()
    ups: dict[Node, set[Node]] = {}
    downs: dict[Node, set[Node]] = {}
    for a, v, ua, uv in edges:
        ups.setdefault((a, v), set()).add((ua, uv))
        downs.setdefault((ua, uv), set()).add((a, v))
    return LineageGraph(root, _walk(root, ups, depth), _walk(root, downs, depth), depth)


def _name(node: Node) -> str:
    return f"{node[0]}@{node[1]}"


def _tree(walk: Walk, root: Node, indent: str) -> list[str]:
    """Each version's subtree is printed once, at its first mention; later mentions are one line
    that refers back to it. Children exist only for versions nearer than the depth limit, so
    everything printed is within ``depth`` edges of the root by its shortest path."""
    lines: list[str] = []
    printed = {root}

    def visit(node: Node, prefix: str) -> None:
        kids = walk.children.get(node, [])
        for i, kid in enumerate(kids):
            last = i == len(kids) - 1
            branch = prefix + ("└── " if last else "├── ")
            if kid in printed:
                lines.append(f"{branch}{_name(kid)}  (see above)")
                continue
            printed.add(kid)
            lines.append(f"{branch}{_name(kid)}" + ("  …" if kid in walk.truncated else ""))
            visit(kid, prefix + ("    " if last else "│   "))

    visit(root, indent)
    return lines


def render_text(g: LineageGraph) -> str:
    out = [_name(g.root)]
    for title, walk in (("upstream", g.upstream), ("downstream", g.downstream)):
        n = len(walk.distance) - 1
        out.append(f"{title}: {n} version{'s' if n != 1 else ''}" + (f" within depth {g.depth}" if g.depth is not None else ""))
        out.extend(_tree(walk, g.root, "  ") or ["  (none)"])
    if g.upstream.truncated or g.downstream.truncated:
        out.append("(… more beyond --depth)")
    return "\n".join(out)


def _walk_json(walk: Walk, reverse: bool) -> dict[str, Any]:
    nodes = [{"asset": a, "data_version": v, "distance": d} for (a, v), d in
             sorted(walk.distance.items(), key=lambda kv: (kv[1], kv[0])) if d > 0]
    edges = []
    for parent, kids in sorted(walk.children.items()):
        for kid in kids:
            src, dst = (kid, parent) if reverse else (parent, kid)
            edges.append({"from": _name(src), "to": _name(dst)})
    return {"nodes": nodes, "edges": edges, "truncated": sorted(_name(n) for n in walk.truncated)}


def to_json(g: LineageGraph) -> str:
    """Edges point from input to output (``from`` was used to make ``to``)."""
    return json.dumps({
        "asset": g.root[0], "data_version": g.root[1], "depth": g.depth,
        "upstream": _walk_json(g.upstream, reverse=True),
        "downstream": _walk_json(g.downstream, reverse=False),
    }, indent=2)


def to_dot(g: LineageGraph) -> str:
    def q(s: str) -> str:
        return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'

    lines = ["digraph lineage {", "  rankdir=LR;", "  node [shape=box, fontname=\"monospace\"];",
             f"  {q(_name(g.root))} [style=bold];"]
    seen: set[tuple[Node, Node]] = set()
    for walk, reverse in ((g.upstream, True), (g.downstream, False)):
        for parent, kids in sorted(walk.children.items()):
            for kid in kids:
                edge = (kid, parent) if reverse else (parent, kid)
                if edge not in seen:
                    seen.add(edge)
                    lines.append(f"  {q(_name(edge[0]))} -> {q(_name(edge[1]))};")
        for node in sorted(walk.truncated):
            lines.append(f"  {q(_name(node))} [style=dashed];")
    lines.append("}")
    return "\n".join(lines)
