"""Every real `nvidia-smi topo` output in tests/data/topo loads, with the GPU count and NVLink pairs
that the file shows. Expected values were written by reading each file, not by running the parser."""

from __future__ import annotations

import itertools

import pytest
from conftest import DATA

from shardplan import load_topology


def _all(n: int, links: int) -> dict[tuple[int, int], int]:
    return {pair: links for pair in itertools.combinations(range(n), 2)}


CUBE_DGX1 = {
    (0, 1): 1,
    (0, 2): 1,
    (0, 3): 2,
    (0, 4): 2,
    (1, 2): 2,
    (1, 3): 1,
    (1, 5): 2,
    (2, 3): 2,
    (2, 6): 1,
    (3, 7): 1,
    (4, 5): 1,
    (4, 6): 1,
    (4, 7): 2,
    (5, 6): 2,
    (5, 7): 1,
    (6, 7): 2,
}
CUBE_WECHAT = {
    (0, 1): 1,
    (0, 2): 2,
    (0, 3): 1,
    (0, 7): 2,
    (1, 2): 1,
    (1, 3): 2,
    (1, 6): 2,
    (2, 3): 2,
    (2, 5): 1,
    (3, 4): 1,
    (4, 5): 2,
    (4, 6): 2,
    (4, 7): 1,
    (5, 6): 1,
    (5, 7): 2,
    (6, 7): 1,
}

# file stem -> (GPU count, NVLink pairs with bonded link count)
EXPECTED: dict[str, tuple[int, dict[tuple[int, int], int]]] = {
    "nvidia-smi-topo-1080ti-2gpu-desktop-phb-numa-na-1": (2, {}),
    "nvidia-smi-topo-a100-8gpu-nv12-17nic-bond-1": (8, _all(8, 12)),
    "nvidia-smi-topo-a100-pcie-4gpu-adroit-1": (4, {}),
    "nvidia-smi-topo-a100-polaris-4gpu-nv4-hand-edited-1": (4, _all(4, 4)),
    "nvidia-smi-topo-a100-sxm-4gpu-della-nv4-1": (4, _all(4, 4)),
    "nvidia-smi-topo-a6000-3gpu-nvlink-bridge-ansi-1": (3, {(0, 1): 4}),
    "nvidia-smi-topo-dgx1-v100-1": (8, CUBE_DGX1),
    "nvidia-smi-topo-gb200-4gpu-tray-partial-1": (4, _all(4, 18)),  # GPU3 row cut; its column is there
    "nvidia-smi-topo-h100-8gpu-nv18-2numa-1": (8, _all(8, 18)),
    "nvidia-smi-topo-h100-gcp-a3-1gpu-pod-1": (1, {}),
    "nvidia-smi-topo-h100-gcp-a3-4of8gpu-pod-1": (4, _all(4, 18)),
    "nvidia-smi-topo-h100-gcp-a3-8gpu-1": (8, _all(8, 18)),
    "nvidia-smi-topo-h100-hgx4gpu-nv6-4nic-1": (4, _all(4, 6)),
    "nvidia-smi-topo-h100-pcie-2gpu-nvlink-bridge-1": (2, {(0, 1): 12}),
    "nvidia-smi-topo-hopper-8gpu-nv18-12nic-1": (8, _all(8, 18)),
    "nvidia-smi-topo-l4-2gpu-sys-1": (2, {}),
    "nvidia-smi-topo-p2p-p-2080ti-2gpu-ns-1": (2, {}),
    "nvidia-smi-topo-p2p-p-rtx50-5gpu-ok-partial-1": (5, {}),
    "nvidia-smi-topo-p2p-r-l4-2gpu-cns-1": (2, {}),
    "nvidia-smi-topo-p2p-rw-rtx5090-2gpu-gns-1": (2, {}),
    "nvidia-smi-topo-rtx3090-2gpu-sys-numa-na-1": (2, {}),
    "nvidia-smi-topo-rtx3090-plus-2xv100sxm2-nv6-homelab-1": (3, {(1, 2): 6}),
    "nvidia-smi-topo-rtx4090-8gpu-2socket-sys-2nic-1": (8, {}),
    "nvidia-smi-topo-rtx5090-2gpu-phb-1": (2, {}),
    "nvidia-smi-topo-rtx6000ada-2gpu-workstation-phb-1": (2, {}),
    "nvidia-smi-topo-tesla-p4-1gpu-numa-na-1": (1, {}),
    "nvidia-smi-topo-v100-sxm2-2gpu-nv2-4numa-rwth-1": (2, {(0, 1): 2}),
    "nvidia-smi-topo-v100-sxm2-8gpu-wechat-yard-mdmangled-1": (8, CUBE_WECHAT),
    "device-h100-topo_m": (1, {}),
}


def test_every_fixture_has_an_expectation():
    assert {p.stem for p in (DATA / "topo").glob("*.txt")} == set(EXPECTED)


@pytest.mark.parametrize("stem", sorted(EXPECTED))
def test_fixture_gpus_and_nvlinks(stem, body_file):
    count, nvlinks = EXPECTED[stem]
    topo = load_topology(body_file(DATA / "topo" / f"{stem}.txt"))
    assert topo.num_gpus == count
    found = {
        (i, j): topo.nvlink_count(i, j) for i, j in itertools.combinations(range(count), 2) if topo.nvlink_count(i, j)
    }
    assert found == nvlinks


def test_only_p2p_status_matrices_leave_the_pcie_tree_unknown(body_file):
    """A `topo -p2p` matrix shows which pairs can talk, not how: its topology says so beside every plan."""
    for stem in EXPECTED:
        caveats = load_topology(body_file(DATA / "topo" / f"{stem}.txt")).caveats
        assert [c.split(":")[0] for c in caveats] == (["PCIe tree unknown"] if "-p2p-" in stem else []), stem


@pytest.mark.parametrize(
    ("stem", "pair", "kind"),
    [
        ("nvidia-smi-topo-1080ti-2gpu-desktop-phb-numa-na-1", (0, 1), "phb"),
        ("nvidia-smi-topo-a100-pcie-4gpu-adroit-1", (0, 1), "node"),
        ("nvidia-smi-topo-a100-pcie-4gpu-adroit-1", (1, 2), "sys"),
        ("nvidia-smi-topo-a6000-3gpu-nvlink-bridge-ansi-1", (0, 2), "node"),
        ("nvidia-smi-topo-dgx1-v100-1", (0, 5), "sys"),
        ("nvidia-smi-topo-dgx1-v100-1", (0, 3), "nvlink"),
        ("nvidia-smi-topo-rtx4090-8gpu-2socket-sys-2nic-1", (0, 1), "sys"),
        # two GPUs and nothing but SYS between them: each alone on its socket, not both on one
        ("nvidia-smi-topo-l4-2gpu-sys-1", (0, 1), "sys"),
        ("nvidia-smi-topo-rtx3090-2gpu-sys-numa-na-1", (0, 1), "sys"),
        ("nvidia-smi-topo-rtx3090-plus-2xv100sxm2-nv6-homelab-1", (0, 2), "node"),
    ],
)
def test_fixture_path_kinds(stem, pair, kind, body_file):
    topo = load_topology(body_file(DATA / "topo" / f"{stem}.txt"))
    assert topo.path_kind(*pair) == kind
    assert topo.path_kind(*reversed(pair)) == kind


def test_nvswitch_recognised_from_link_counts(body_file):
    # NV18 between all 8 GPUs is 126 links per GPU: only an NVSwitch fabric gives that.
    topo = load_topology(body_file(DATA / "topo" / "nvidia-smi-topo-h100-gcp-a3-8gpu-1.txt"), gpu="h100-sxm")
    assert len(topo.nvswitch_domains) == 1 and not topo.nvlinks
    # NV6 between 4 GPUs is 18 per GPU: direct links (HGX H100 4-GPU has no NVSwitch).
    topo = load_topology(body_file(DATA / "topo" / "nvidia-smi-topo-h100-hgx4gpu-nv6-4nic-1.txt"))
    assert not topo.nvswitch_domains and len(topo.nvlinks) == 6


def test_nics_from_legend_and_columns(body_file):
    topo = load_topology(body_file(DATA / "topo" / "nvidia-smi-topo-a100-8gpu-nv12-17nic-bond-1.txt"))
    names = [nic.name for nic in topo.nics]
    assert names[0] == "mlx5_2" and names[-1] == "mlx5_bond_0" and len(names) == 17
    assert topo.nics[0].near == (0, 1)  # NIC0 is PXB to GPU0 and GPU1, SYS to the rest
    topo = load_topology(body_file(DATA / "topo" / "nvidia-smi-topo-dgx1-v100-1.txt"))
    assert [nic.name for nic in topo.nics] == ["mlx5_0"] and topo.nics[0].near == (2, 3)


def test_sockets_from_cpu_affinity_when_nvlink_hides_pcie(body_file):
    topo = load_topology(body_file(DATA / "topo" / "nvidia-smi-topo-h100-8gpu-nv18-2numa-1.txt"))
    assert [g.socket for g in topo.gpus] == [0, 0, 0, 0, 1, 1, 1, 1]


def test_gpu_model_from_nvidia_smi_table_in_same_text(body_file):
    # The RWTH file holds the nvidia-smi table: "Tesla V100-SXM2..." with 16384MiB.
    topo = load_topology(body_file(DATA / "topo" / "nvidia-smi-topo-v100-sxm2-2gpu-nv2-4numa-rwth-1.txt"))
    assert [g.model for g in topo.gpus] == ["v100-sxm2-16gb"] * 2
    assert topo.gpus[0].memory_bytes == 16384 * 2**20
    assert topo.bandwidth_gbps(0, 1, achievable=False) == 2 * 25.0


def test_unknown_gpu_model_only_needed_for_bandwidth(body_file):
    from shardplan.errors import TopologyError

    topo = load_topology(body_file(DATA / "topo" / "nvidia-smi-topo-a100-8gpu-nv12-17nic-bond-1.txt"))
    assert topo.nvlink_count(0, 7) == 12
    with pytest.raises(TopologyError, match="pass --gpu"):
        topo.bandwidth_gbps(0, 7)
    topo = load_topology(
        body_file(DATA / "topo" / "nvidia-smi-topo-a100-8gpu-nv12-17nic-bond-1.txt"), gpu="a100-sxm-80gb"
    )
    assert topo.bandwidth_gbps(0, 7, achievable=False) == 12 * 25.0


def test_sxm_modules_without_nvlink_in_a_saved_matrix_say_topo_mp_may_have_hidden_it(body_file, tmp_path):
    """`nvidia-smi topo -mp` prints PCIe paths only, NVLink pairs as NODE or SYS. GCP A3's matrix so rewritten, for
    H100 SXMs, carries a caveat that `suggest` and `topo` print beside the plan; the matrix as `topo -m` printed it,
    and PCIe cards, carry none."""
    saved = body_file(DATA / "topo" / "nvidia-smi-topo-h100-gcp-a3-8gpu-1.txt")
    rows = []
    for line in saved.read_text().splitlines():
        cells = line.split("\t")
        if cells[0].startswith("GPU") and cells[0][3:].isdigit():
            i = int(cells[0][3:])
            cells[1:] = [("NODE" if (i < 4) == (j < 4) else "SYS") if "NV" in c else c for j, c in enumerate(cells[1:])]
        rows.append("\t".join(cells))
    mp = tmp_path / "a3-topo-mp.txt"
    mp.write_text("\n".join(rows) + "\n")
    hidden = load_topology(mp, gpu="h100-sxm")
    assert not hidden.nvlinks and not hidden.nvswitch_domains
    assert [c.split(":")[0] for c in hidden.caveats] == [
        "no NVLink shown between the 8 h100-sxm GPUs, SXM modules that their boards join by NVLink"
    ]
    assert "nvidia-smi topo -m" in hidden.caveats[0]
    assert load_topology(saved, gpu="h100-sxm").caveats == ()
    assert load_topology(mp, gpu="h100-pcie").caveats == ()
