"""Read saved `nvidia-smi topo -m` (or `topo -p2p`) text and `nvidia-smi nvlink -s` text.

Tolerates what real copies contain: TABs turned into spaces, ANSI underline on the header, shell
prompts, markdown fences, blank lines between rows, NICs as `mlx5_N` columns or `NICn` + legend,
`SOC` (older name of `SYS`), one to three affinity columns, and rows cut off at the end (the matrix
is symmetric, so a missing row is read from the columns of the others). Returns a `TopologySpec`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from pydantic import ValidationError

from shardplan.errors import ParseError, describe_validation
from shardplan.topology.catalog import MAX_DIRECT_NVLINKS_PER_GPU, match_product_name
from shardplan.topology.graph import alone_in_the_rest, groups_from_pairs
from shardplan.topology.sources import decimal
from shardplan.topology.spec import GpuInfo, NicSpec, NodeSpec, NvSwitchSpec, PcieSpec, TopologySpec

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_GPU = re.compile(r"GPU(\d+)$")
_NV = re.compile(r"NV(\d+)$")
_PCIE_TOKENS = {"PIX": "pix", "PXB": "pxb", "PHB": "phb", "NODE": "node", "SYS": "sys", "SOC": "sys"}
_P2P_TOKENS = {"OK", "CNS", "GNS", "TNS", "NS", "U"}
_AFFINITY_WORDS = {"CPU", "NUMA", "Affinity", "ID"}
# PCIe kinds that imply sharing each level of the tree (nvidia-smi legend).
_SAME_SWITCH = {"pix"}
_SAME_SWITCH_GROUP = {"pix", "pxb"}
_SAME_HOST_BRIDGE = {"pix", "pxb", "phb"}
_SAME_SOCKET = {"pix", "pxb", "phb", "node"}
_SMI_ROW = re.compile(r"^\|\s+(\d+)\s+(.+?)\s+(?:On|Off)\s+\|\s+([0-9A-Fa-f]{4,8}:[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2}\.\d)")
_SMI_MEM = re.compile(r"\d+MiB\s*/\s*(\d+)MiB")


def looks_like_topo(text: str) -> bool:
    """True if `text` holds an `nvidia-smi topo` matrix header (used to recognise a file by content)."""
    return any(_header_tokens(_clean(line)) for line in text.splitlines())


def _clean(line: str) -> list[str]:
    line = _ANSI.sub("", line).replace("```", " ")
    return line.split()


def _header_tokens(tokens: list[str]) -> list[str] | None:
    """Device column names if this line is a matrix header (starts GPU0, then no link cell)."""
    if not tokens or tokens[0] != "GPU0":
        return None
    if len(tokens) > 1 and (tokens[1] == "X" or _NV.match(tokens[1]) or tokens[1] in _PCIE_TOKENS):
        return None
    cols: list[str] = []
    for tok in tokens:
        if tok in _AFFINITY_WORDS or tok == "GPU":
            break
        cols.append(tok)
    return cols


@dataclass
class _Matrix:
    columns: list[str]
    header_line: int
    affinity_fields: list[str]
    cells: dict[tuple[str, str], str] = field(default_factory=dict)
    p2p_refused: bool = False
    affinity: dict[str, list[str]] = field(default_factory=dict)
    nic_legend: dict[str, str] = field(default_factory=dict)
    p2p: bool = False


def _parse_matrix(text: str, source: str) -> _Matrix:
    lines = text.splitlines()
    matrix: _Matrix | None = None
    for number, raw in enumerate(lines, start=1):
        tokens = _clean(raw)
        if matrix is None:
            cols = _header_tokens(tokens)
            if cols:
                words = " ".join(tokens)
                fields = [f for f in ("CPU Affinity", "NUMA Affinity", "GPU NUMA ID") if f in words]
                matrix = _Matrix(columns=cols, header_line=number, affinity_fields=fields)
            continue
        legend = re.match(r"^\s*(NIC\d+):\s*(\S+)\s*$", _ANSI.sub("", raw))
        if legend:
            matrix.nic_legend[legend.group(1)] = legend.group(2)
            continue
        if not tokens or tokens[0] not in matrix.columns:
            continue
        _parse_row(matrix, tokens, number, source)
    if matrix is None:
        raise ParseError(source, None, "no `nvidia-smi topo -m` matrix found (expected a header row starting GPU0)")
    return matrix


def _parse_row(matrix: _Matrix, tokens: list[str], number: int, source: str) -> None:
    row, cells = tokens[0], tokens[1:]
    ncols = len(matrix.columns)
    if len(cells) < ncols:
        raise ParseError(source, number, f"expected {ncols} cells after {row}, found {len(cells)}")
    for col, cell in zip(matrix.columns, cells[:ncols], strict=True):
        if cell == "X":
            if col != row:
                raise ParseError(source, number, f"'X' (self) in column {col} of row {row}")
            continue
        if cell in _P2P_TOKENS:
            matrix.p2p = True
            matrix.p2p_refused |= cell != "OK"
        elif not (_NV.match(cell) or cell in _PCIE_TOKENS):
            raise ParseError(
                source, number, f"expected a link (X, NV#, PIX, PXB, PHB, NODE, SYS) in column {col}, found {cell!r}"
            )
        matrix.cells[(row, col)] = cell
    matrix.affinity[row] = cells[ncols:]


def _relation(matrix: _Matrix, a: str, b: str) -> str | None:
    """The cell for (a, b), read from either row (rows may be missing at the end of a cut copy)."""
    return matrix.cells.get((a, b)) or matrix.cells.get((b, a))


def _smi_table(text: str) -> dict[int, GpuInfo]:
    """Product name, bus id and memory from an `nvidia-smi` table in the same text, if present."""
    out: dict[int, GpuInfo] = {}
    lines = text.splitlines()
    for k, line in enumerate(lines):
        m = _SMI_ROW.match(line.strip())
        if not m:
            continue
        mem = _SMI_MEM.search(lines[k + 1]) if k + 1 < len(lines) else None
        memory = int(mem.group(1)) * 2**20 if mem else None
        out[int(m.group(1))] = GpuInfo(name=m.group(2).strip(), memory_bytes=memory, pci_bus_id=m.group(3))
    return out


def parse_topo(text: str, source: str = "<text>") -> TopologySpec:
    """A one-node `TopologySpec` from `nvidia-smi topo -m` (or `topo -p2p`) output."""
    matrix = _parse_matrix(text, source)
    gpus = [c for c in matrix.columns if _GPU.match(c)]
    if [int(_GPU.match(c).group(1)) for c in gpus] != list(range(len(gpus))):  # type: ignore[union-attr]
        raise ParseError(source, matrix.header_line, f"expected GPU columns GPU0..GPU{len(gpus) - 1} in order")
    nics = [c for c in matrix.columns if not _GPU.match(c)]
    pairs = [(a, b) for i, a in enumerate(gpus) for b in gpus[i + 1 :]]
    nvlink = []
    for a, b in pairs:
        m = _NV.match(_relation(matrix, a, b) or "")
        if m:
            nvlink.append((gpus.index(a), gpus.index(b), int(m.group(1))))
    nvswitch = _detect_nvswitch(nvlink, len(gpus))
    kinds = {(a, b): _PCIE_TOKENS.get(_relation(matrix, a, b) or "") for a in matrix.columns for b in matrix.columns}
    devices = gpus + nics
    cpu = {d: (matrix.affinity.get(d) or [None])[0] for d in gpus}

    def linked(levels: set[str], *, by_cpu: bool = False) -> list[tuple[str, str]]:
        out = [(a, b) for a in devices for b in devices if a < b and kinds[(a, b)] in levels]
        if by_cpu:  # NVLinked GPUs hide their PCIe relation: same CPU affinity = same socket
            out += [(a, b) for a, b in pairs if kinds[(a, b)] is None and cpu[a] and cpu[a] == cpu[b]]
            if not any(cpu.values()):
                out += [(a, b) for a, b in pairs if kinds[(a, b)] is None]
        return out

    def local(groups: list[list[str]]) -> list[list[int]]:
        return [[gpus.index(d) for d in g if d in gpus] for g in groups if any(d in gpus for d in g)]

    socket_groups = groups_from_pairs(devices, linked(_SAME_SOCKET, by_cpu=True))
    sockets = local(socket_groups)
    if not matrix.p2p:  # a GPU the matrix puts across the SMP link from every other is alone on its socket
        sockets = alone_in_the_rest(sockets, len(gpus))
    socket_of = {k: s for s, group in enumerate(sockets) for k in group}
    pcie = PcieSpec(
        sockets=sockets,
        host_bridges=local(groups_from_pairs(devices, linked(_SAME_HOST_BRIDGE))),
        switch_groups=local(groups_from_pairs(devices, linked(_SAME_SWITCH_GROUP))),
        switches=local(groups_from_pairs(devices, linked(_SAME_SWITCH))),
    )
    table = _smi_table(text)
    infos = [_gpu_info(matrix, g, k, table) for k, g in enumerate(gpus)]
    nic_specs = [_nic_spec(matrix, nic, gpus, kinds, socket_groups, socket_of) for nic in nics]
    note = "nvidia-smi topo -p2p status matrix" if matrix.p2p else "nvidia-smi topo -m"
    caveats = ["PCIe tree unknown: a topo -p2p status matrix does not show it (one socket taken)"] if matrix.p2p else []
    try:
        node = NodeSpec(
            gpus=len(gpus),
            gpu_info=infos,
            nvlink=[] if nvswitch else nvlink,
            nvswitch=nvswitch,
            pcie=pcie,
            nics=nic_specs,
            p2p=not matrix.p2p_refused if matrix.p2p else None,  # topo -m does not say: the catalogue's
        )
    except ValidationError as err:
        raise ParseError(source, None, describe_validation(err)) from None
    return TopologySpec(name=source.rsplit("/", 1)[-1], source=f"{source} ({note})", caveats=caveats, nodes=[node])


def _detect_nvswitch(nvlink: list[tuple[int, int, int]], n: int) -> NvSwitchSpec | None:
    """An NVSwitch fabric, if every GPU pair shows the same NV# and the links add up to more than
    one GPU can have directly (catalog.MAX_DIRECT_NVLINKS_PER_GPU)."""
    if n < 3 or len(nvlink) != n * (n - 1) // 2:
        return None
    counts = {links for _, _, links in nvlink}
    if len(counts) != 1:
        return None
    links = counts.pop()
    return NvSwitchSpec(links_per_gpu=links) if links * (n - 1) > MAX_DIRECT_NVLINKS_PER_GPU else None


def _gpu_info(matrix: _Matrix, col: str, k: int, table: dict[int, GpuInfo]) -> GpuInfo:
    fields = dict(zip(matrix.affinity_fields, matrix.affinity.get(col, []), strict=False))
    numa = fields.get("NUMA Affinity", "")
    base = table.get(k, GpuInfo())
    model = match_product_name(base.name, base.memory_bytes) if base.name else None
    return base.model_copy(update={"numa_node": decimal(numa), "model": model})


def _nic_spec(
    matrix: _Matrix,
    nic: str,
    gpus: list[str],
    kinds: dict[tuple[str, str], str | None],
    groups: list[list[str]],
    socket_of: dict[int, int],
) -> NicSpec:
    """The NIC `nic` of the matrix: the GPUs nearest it (PHB or closer) and the socket of a GPU its group holds."""
    best = min((_RANK.get(kinds[(nic, g)] or "", 9) for g in gpus), default=9)
    near = [k for k, g in enumerate(gpus) if _RANK.get(kinds[(nic, g)] or "", 9) == best and best <= _RANK["phb"]]
    mates = next((group for group in groups if nic in group), [])
    socket = next((socket_of[gpus.index(d)] for d in mates if d in gpus), None)
    return NicSpec(name=matrix.nic_legend.get(nic, nic), near=near, socket=socket)


_RANK = {"pix": 0, "pxb": 1, "phb": 2, "node": 3, "sys": 4}


def parse_nvlink_status(text: str, source: str = "<text>") -> dict[int, list[float | None]]:
    """Per GPU, each link's GB/s from `nvidia-smi nvlink -s` (None for an inactive link)."""
    out: dict[int, list[float | None]] = {}
    current: int | None = None
    for raw in text.splitlines():
        line = _ANSI.sub("", raw).strip()
        gpu = re.match(r"^GPU (\d+):", line)
        if gpu:
            current = int(gpu.group(1))
            out[current] = []
            continue
        link = re.match(r"^Link (\d+):\s*(.*)$", line)
        if link and current is not None:
            speed = re.match(r"([0-9.]+)\s*GB/s", link.group(2))
            out[current].append(float(speed.group(1)) if speed else None)
    if not out:
        raise ParseError(source, None, "no 'GPU n:' blocks found (expected `nvidia-smi nvlink -s` output)")
    return out


def apply_nvlink_status(spec: TopologySpec, status: dict[int, list[float | None]]) -> TopologySpec:
    """`spec` with the per-link NVLink speed that `nvidia-smi nvlink -s` reports (the most common
    active speed), so bandwidths no longer depend on knowing the GPU model."""
    speeds = [s for links in status.values() for s in links if s]
    if not speeds:
        return spec
    speed = max(set(speeds), key=lambda s: (speeds.count(s), s))
    node = spec.nodes[0].model_copy(update={"nvlink_gbps_per_link": speed})
    return spec.model_copy(update={"nodes": [node, *spec.nodes[1:]]})
