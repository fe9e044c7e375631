"""Turn a declared `TopologySpec` into a `Topology`: expand node counts, copy for `nodes=N`,
number GPUs globally, resolve GPU models, and place each GPU in its node's PCIe tree."""

from __future__ import annotations

import math

from shardplan.errors import TopologyError
from shardplan.topology.catalog import gpu_model, gpu_models, match_product_name
from shardplan.topology.schema import Gpu, Network, Nic, Node, NvLinkBundle, NvSwitchDomain, Topology
from shardplan.topology.spec import NodeSpec, TopologySpec

# NVLink SHARP needs third-generation NVSwitch (Hopper) or later: NVIDIA H100 datasheet ("NVLink
# Switch System ... SHARP in-network reductions"), GB200 NVL72 datasheet.
NVLS_MODELS = frozenset({"h100-sxm", "h200-sxm", "h800-sxm", "h20", "gh200", "b200", "b300", "gb200"})


def _link_gen(declared: int | None, model: str | None) -> int | None:
    """The PCIe generation a GPU's link runs at: a link trains to the older of its two ends, the slot's (as
    declared) and the GPU's (the catalogue's), so an A100 (Gen4) in a Gen5 server runs Gen4."""
    if declared is None or model is None:
        return declared
    return min(declared, gpu_model(model).pcie_gen)


def _group_ids(groups: list[list[int]], n: int, *, default_shared: bool) -> list[int | None]:
    """Group number of each local GPU; GPUs in no group get their own id (or share 0 when
    `default_shared` and no groups were declared at all)."""
    if not groups:
        return [0] * n if default_shared else list(range(n))
    ids: list[int | None] = [None] * n
    for k, group in enumerate(groups):
        for idx in group:
            ids[idx] = k
    next_id = len(groups)
    for idx in range(n):
        if ids[idx] is None:
            ids[idx] = next_id
            next_id += 1
    return ids


def _switch_ids(groups: list[list[int]], n: int) -> list[int | None]:
    """Like `_group_ids` for switches, where a GPU in no group sits on no switch (None)."""
    ids: list[int | None] = [None] * n
    for k, group in enumerate(groups):
        for idx in group:
            ids[idx] = k
    return ids


def _nvlink_not_shown(source: str | None, node: NodeSpec, models: list[str | None]) -> list[str]:
    """A caveat where a saved `nvidia-smi topo` matrix shows no NVLink between SXM modules, which their boards join by
    NVLink: `nvidia-smi topo -mp` (PCIe paths only) prints such a matrix, and so does `topo -p2p`."""
    sxm = bool(models) and all(m is not None and "sxm" in m for m in models)
    if "(nvidia-smi topo" not in (source or "") or node.gpus < 2 or node.nvlink or node.nvswitch is not None or not sxm:
        return []
    return [
        f"no NVLink shown between the {node.gpus} {models[0]} GPUs, SXM modules that their boards join by NVLink: "
        "`nvidia-smi topo -mp` shows PCIe paths only; if the matrix came from it, save `nvidia-smi topo -m` (or "
        "give `nvidia-smi nvlink -s` as --nvlink)"
    ]


def _resolve_model(node: NodeSpec, local: int, override: str | None) -> str | None:
    """GPU `local`'s model: what the source says, else `override` (`--gpu`), else its product name's. An override
    that contradicts the source is refused, not dropped unseen."""
    info = node.gpu_info[local] if node.gpu_info else None
    for key in (info.model if info else None, node.gpu, override):
        if key is not None:
            gpu_model(key)  # unknown names fail here, with the list of known ones
            if override is not None and key != override:
                raise TopologyError(
                    f"the source names GPU {local} of node {node.name!r} {key}, not {override}: --gpu (gpu=) only "
                    "names GPUs that a source leaves unnamed (a saved nvidia-smi topo -m); leave it out"
                )
            return key
    if info and info.name:
        return match_product_name(info.name, info.memory_bytes)
    return None


def _check_nvlink_models(name: str, node: NodeSpec, models: list[str | None]) -> None:
    """A one-line `TopologyError` where the node joins by NVLink a GPU whose catalogue model has none (an L40S, say),
    or by more links than the model has (NV99 between two H100s, which have 18; an NVSwitch taking 18 of a V100's 6),
    and states no NVLink speed of its own."""
    if node.nvlink_gbps_per_link is not None:
        return
    joined = [(f"nvlink [{a}, {b}, {links}]", (a, b), links) for a, b, links in node.nvlink]
    if node.nvswitch is not None:
        switch = node.nvswitch
        joined.append(("nvswitch", tuple(switch.gpus or range(node.gpus)), switch.links_per_gpu))
    for field, gpus, links in joined:
        for k in gpus:
            if models[k] is None:
                continue
            model = gpu_model(models[k])
            if model.nvlink_gbps_per_link <= 0:
                raise TopologyError(
                    f"{name}: node {node.name!r}: {field}: GPU {k}'s model, {models[k]}, has no NVLink; "
                    "leave the NVLink out, name the right gpu, or state nvlink_gbps_per_link"
                )
            if links > model.nvlink_links:
                raise TopologyError(
                    f"{name}: node {node.name!r}: {field}: GPU {k}'s model, {models[k]}, has "
                    f"{model.nvlink_links} NVLinks, fewer than the {links} stated"
                )


def _with_nic_speed(spec: TopologySpec, gbit: float) -> TopologySpec:
    """`spec` with `gbit` the line rate of every NIC it states none for, and of the one NIC a node that lists none
    leaves through (`network.gbit_per_nic`). A speed that contradicts one the source states is refused."""
    if not 0 < gbit < math.inf:
        raise TopologyError(
            f"{spec.name}: --nic-gbit (nic_gbit=) must be a positive line rate in Gb/s, such as 400; got {gbit}"
        )
    stated = ({nic.gbit for ns in spec.nodes for nic in ns.nics} | {spec.network.gbit_per_nic}) - {None}
    if stated - {gbit}:
        speeds = ", ".join(f"{g:g}" for g in sorted(stated))
        raise TopologyError(
            f"{spec.name}: the source states NICs of {speeds} Gb/s, not {gbit:g}: --nic-gbit "
            "(nic_gbit=) only gives a speed to NICs that a source leaves without one (a saved nvidia-smi topo -m); "
            "leave it out"
        )
    return spec.model_copy(update={"network": spec.network.model_copy(update={"gbit_per_nic": gbit})})


# The most GPUs a topology may hold: a cluster of this size takes 0.4 GB and 3.6 s to build here (dgx-h100 x 16,384,
# measured 2026-12-07); eight times more took 2.9 GB and 28 s, and a mistyped --nodes 1000000 ran out of memory.
# The largest training runs published (Llama 3 405B: 16,384 H100s, arXiv:2407.21783) fit with room to spare.
MAX_GPUS = 131_072


def build(spec: TopologySpec, *, nodes: int = 1, gpu: str | None = None, nic_gbit: float | None = None) -> Topology:
    """The `Topology` of `nodes` copies of `spec`, GPUs numbered node by node.

    `gpu` names the GPU model where the source does not say it; `nic_gbit` the line rate of its NICs, in Gb/s,
    where it states none (a node that lists no NICs leaves through one of that rate).
    """
    if nodes < 1:
        raise TopologyError(f"nodes must be at least 1, got {nodes}")
    total = nodes * sum(ns.count * ns.gpus for ns in spec.nodes)
    if total > MAX_GPUS:
        raise TopologyError(
            f"{spec.name}: {nodes} x {total // nodes} GPUs = {total:,} GPUs; shardplan plans clusters of up to "
            f"{MAX_GPUS:,} GPUs (check --nodes, nodes=, or each node's count)"
        )
    if nic_gbit is not None:
        spec = _with_nic_speed(spec, nic_gbit)
    if gpu is not None and gpu not in gpu_models():
        gpu_model(gpu)
    caveats = list(spec.caveats)
    for ns in spec.nodes:  # once per kind of node, not per copy
        models = [_resolve_model(ns, k, gpu) for k in range(ns.gpus)]
        _check_nvlink_models(spec.name, ns, models)
        caveats += _nvlink_not_shown(spec.source, ns, models)
    node_specs = [ns for _ in range(nodes) for ns in spec.nodes for _ in range(ns.count)]
    gpus: list[Gpu] = []
    bundles: list[NvLinkBundle] = []
    domains: list[tuple[list[int], NvSwitchDomain]] = []
    nics: list[Nic] = []
    out_nodes: list[Node] = []
    for node_index, ns in enumerate(node_specs):
        base = len(gpus)
        n = ns.gpus
        sockets = _group_ids(ns.pcie.sockets, n, default_shared=True)
        # GPUs under one switch share its host bridge, where the source lists switches but no bridges
        bridges = _group_ids(ns.pcie.host_bridges or ns.pcie.switch_groups or ns.pcie.switches, n, default_shared=False)
        groups = _switch_ids(ns.pcie.switch_groups or ns.pcie.switches, n)
        switches = _switch_ids(ns.pcie.switches, n)
        models = [_resolve_model(ns, k, gpu) for k in range(n)]
        for k in range(n):
            info = ns.gpu_info[k] if ns.gpu_info else None
            model = models[k]
            gpus.append(
                Gpu(
                    index=base + k,
                    node=node_index,
                    local_index=k,
                    name=info.name if info else None,
                    model=model,
                    memory_bytes=(info.memory_bytes if info and info.memory_bytes else None)
                    or (gpu_model(model).memory_bytes if model else None),
                    pci_bus_id=info.pci_bus_id if info else None,
                    numa_node=info.numa_node if info else None,
                    socket=sockets[k] or 0,
                    host_bridge=bridges[k] or 0,
                    switch_group=groups[k],
                    switch=switches[k],
                    pcie_gen=_link_gen((info.pcie_gen if info else None) or ns.pcie.gen, model),
                    pcie_width=(info.pcie_width if info else None) or ns.pcie.width,
                )
            )
        per_link = ns.nvlink_gbps_per_link
        if per_link is None and models[0] is not None and len(set(models)) == 1:
            per_link = gpu_model(models[0]).nvlink_gbps_per_link or None
        for a, b in {(min(a, b), max(a, b)) for a, b, _ in ns.nvlink}:
            links = max(lk for x, y, lk in ns.nvlink if {x, y} == {a, b})
            bundles.append(NvLinkBundle(a=base + a, b=base + b, links=links, gbps_per_link=per_link))
        if ns.nvswitch is not None:
            members = ns.nvswitch.gpus if ns.nvswitch.gpus is not None else list(range(n))
            domain = NvSwitchDomain(
                gpus=tuple(base + k for k in members),
                links_per_gpu=ns.nvswitch.links_per_gpu,
                gbps_per_link=per_link,
                nvls=ns.nvswitch.nvls if ns.nvswitch.nvls is not None else models[0] in NVLS_MODELS,
            )
            domains.append(([node_index], domain))
        for nic in ns.nics:
            nics.append(
                Nic(
                    node=node_index,
                    name=nic.name,
                    gbit=nic.gbit or spec.network.gbit_per_nic,
                    socket=nic.socket if nic.socket is not None else (sockets[nic.near[0]] if nic.near else None),
                    near=tuple(base + k for k in nic.near),
                )
            )
        p2p = ns.p2p if ns.p2p is not None else all(gpu_model(m).pcie_p2p for m in set(models) if m is not None)
        out_nodes.append(
            Node(index=node_index, name=ns.name, socket_link_gbps=ns.pcie.socket_link_gbps, p2p=p2p, cpu=ns.cpu)
        )
    return Topology(
        name=spec.name if nodes == 1 else f"{nodes}x {spec.name}",
        source=spec.source,
        caveats=tuple(caveats),
        gpus=tuple(gpus),
        nodes=tuple(out_nodes),
        nvlinks=tuple(sorted(bundles, key=lambda b: (b.a, b.b))),
        nvswitch_domains=_merge_domains(domains, spec.nvlink_domain_nodes),
        nics=tuple(nics),
        network=Network(name=spec.network.name, gbit_per_nic=spec.network.gbit_per_nic),
    )


def _merge_domains(
    domains: list[tuple[list[int], NvSwitchDomain]], nodes_per_domain: int
) -> tuple[NvSwitchDomain, ...]:
    """Join the NVSwitch fabrics of every `nodes_per_domain` consecutive nodes (an NVL72 rack)."""
    if nodes_per_domain == 1:
        return tuple(d for _, d in domains)
    merged: dict[int, NvSwitchDomain] = {}
    for (node_index, *_), d in domains:
        key = node_index // nodes_per_domain
        if key in merged:
            m = merged[key]
            merged[key] = m.model_copy(update={"gpus": m.gpus + d.gpus})
        else:
            merged[key] = d
    return tuple(merged[k] for k in sorted(merged))
