"""The default H1 and L1 channel sets, generated in code (no data files).

Realistic in size and shape: ~700 channels per detector with LIGO-style names, most of them
float32 between 256 Hz and 16 kHz, a few float64 strain channels and int32 state vectors;
each detector has its own publisher (``MOCK_H1``, ``MOCK_L1``).  Deterministic: the same
names, rates and types on every run.
"""

from __future__ import annotations

import itertools

from router.protocol.channel import ChannelMeta

__all__ = ["DEFAULT_MAX_LATENCY", "DEFAULT_STRIDE", "default_channels"]

DEFAULT_STRIDE = 62_500_000
DEFAULT_MAX_LATENCY = 1_000_000_000

# subsystem -> (optics/sensors, degrees of freedom / signals, suffixes, rates cycled)
_PARTS: dict[str, tuple[list[str], list[str], list[str], list[int]]] = {
    "ASC": (
        ["AS_A_RF45", "AS_B_RF36", "REFL_A_RF9", "REFL_B_RF45", "POP_X", "X_TR_A", "Y_TR_B"],
        ["I_PIT", "I_YAW", "Q_PIT", "Q_YAW", "DC_PIT", "DC_YAW"],
        ["OUT_DQ", "INMON"],
        [512, 2048, 256, 2048, 1024],
    ),
    "CAL": (
        ["PCALX", "PCALY", "CS_TDEP", "DELTAL"],
        ["RX_PD", "TX_PD", "OFS_PD", "EXTERNAL", "CTRL", "RESIDUAL"],
        ["OUT_DQ"],
        [16384, 16384, 4096, 256],
    ),
    "HPI": (
        ["HAM1", "HAM2", "HAM3", "BS", "ITMX", "ITMY", "ETMX", "ETMY"],
        ["BLND_L4C_X", "BLND_L4C_Y", "BLND_L4C_Z", "BLND_IPS_HP", "BLND_IPS_VP", "ISO_RZ"],
        ["IN1_DQ"],
        [256, 1024, 256, 512],
    ),
    "IMC": (
        ["MC1", "MC2", "MC3", "WFS_A", "WFS_B", "REFL", "TRANS", "F"],
        ["I_PIT", "I_YAW", "Q_PIT", "Q_YAW", "DC_SUM"],
        ["OUT_DQ"],
        [2048, 16384, 2048, 512],
    ),
    "ISI": (
        [
            "HAM2",
            "HAM3",
            "HAM4",
            "HAM5",
            "BS_ST1",
            "BS_ST2",
            "ITMX_ST1",
            "ITMX_ST2",
            "ITMY_ST1",
            "ITMY_ST2",
            "ETMX_ST1",
            "ETMX_ST2",
            "ETMY_ST1",
            "ETMY_ST2",
        ],
        [
            "BLND_T240_X",
            "BLND_T240_Y",
            "BLND_T240_Z",
            "BLND_CPS_X",
            "BLND_CPS_Y",
            "BLND_CPS_Z",
            "GS13_H1",
            "GS13_V1",
            "FF_L4C_Z",
        ],
        ["IN1_DQ"],
        [256, 2048, 1024, 256, 2048],
    ),
    "LSC": (
        [
            "DARM",
            "MICH",
            "PRCL",
            "SRCL",
            "CARM",
            "REFL_A_RF9",
            "REFL_A_RF45",
            "POP_A_RF9",
            "AS_A_RF45",
            "X_TR_A",
            "Y_TR_A",
            "MCL",
        ],
        ["IN1", "IN2", "OUT", "ERR", "CTRL"],
        ["DQ"],
        [16384, 2048, 16384, 2048, 4096],
    ),
    "OMC": (
        ["DCPD_A", "DCPD_B", "PZT1", "PZT2", "ASC_POS_X", "ASC_POS_Y", "ASC_ANG_X"],
        ["OUT", "IN1", "MON", "ERR"],
        ["DQ"],
        [16384, 8192, 2048, 512],
    ),
    "PEM": (
        [
            "CS_ACC_BSC1_ITMY",
            "CS_ACC_BSC3_ITMX",
            "CS_MAG_LVEA_VERTEX",
            "CS_MIC_LVEA_BS",
            "EX_ACC_BSC9_ETMX",
            "EY_ACC_BSC10_ETMY",
            "EX_MAG_EBAY_SEIRACK",
            "EY_MIC_VEA_PLUSY",
            "CS_SEIS_LVEA_VERTEX",
            "EX_SEIS_VEA_FLOOR",
            "EY_SEIS_VEA_FLOOR",
            "CS_TEMP_LVEA",
        ],
        ["X", "Y", "Z", "SUM"],
        ["DQ", "MON"],
        [2048, 256, 8192, 256, 2048, 1024],
    ),
    "PSL": (
        [
            "ISS_PDA",
            "ISS_PDB",
            "FSS_FAST",
            "FSS_PC",
            "PMC_REFL",
            "PMC_TRANS",
            "ILS_HV",
            "DIAG_BULLSEYE",
            "OSC_PD_AMP",
        ],
        ["OUT", "MON", "REL"],
        ["DQ"],
        [16384, 2048, 1024, 256],
    ),
    "SUS": (
        [
            "ETMX_L3",
            "ETMY_L3",
            "ITMX_L2",
            "ITMY_L2",
            "BS_M2",
            "PRM_M3",
            "SRM_M3",
            "MC2_M3",
            "ETMX_M0",
            "ITMX_M0",
        ],
        [
            "MASTER_OUT_UL",
            "MASTER_OUT_UR",
            "MASTER_OUT_LL",
            "MASTER_OUT_LR",
            "OSEMINF_UL",
            "OSEMINF_UR",
            "OPLEV_PIT",
            "OPLEV_YAW",
            "WIT_L",
            "WIT_P",
        ],
        ["DQ"],
        [16384, 512, 256, 256, 2048, 256],
    ),
    "TCS": (
        ["ITMX_CO2", "ITMY_CO2", "ITMX_HWS", "ITMY_HWS", "SIM_ITMX"],
        ["LSRPWR_HD_PD", "ISS_OUT", "INTRLK_RTD", "PROBE_SUM", "SPHERICAL_POWER"],
        ["OUTPUT", "MON"],
        [256, 512, 256],
    ),
    "ALS": (
        ["X_REFL", "Y_REFL", "C_COMM", "C_DIFF", "X_FIBR", "Y_FIBR"],
        ["ERR_OUT", "CTRL_OUT", "A_DEMOD_I", "A_DEMOD_Q"],
        ["DQ"],
        [2048, 16384, 256],
    ),
}

_COUNTS = {
    "H1": {
        "ASC": 120,
        "CAL": 30,
        "HPI": 48,
        "IMC": 40,
        "ISI": 120,
        "LSC": 90,
        "OMC": 28,
        "PEM": 120,
        "PSL": 27,
        "SUS": 100,
        "TCS": 40,
    },
    "L1": {
        "ALS": 24,
        "ASC": 100,
        "CAL": 24,
        "HPI": 40,
        "IMC": 36,
        "ISI": 110,
        "LSC": 80,
        "OMC": 24,
        "PEM": 96,
        "PSL": 27,
        "SUS": 80,
        "TCS": 40,
    },
}


def _gds(ifo: str, publisher: str) -> list[ChannelMeta]:
    f64 = [
        ChannelMeta(
            f"{ifo}:GDS-CALIB_STRAIN{suffix}",
            "float64",
            16384,
            DEFAULT_STRIDE,
            DEFAULT_MAX_LATENCY,
            publisher,
        )
        for suffix in ("", "_CLEAN", "_NOLINES")
    ]
    i32 = [
        ChannelMeta(
            f"{ifo}:GDS-CALIB_{name}", "int32", 16, DEFAULT_STRIDE, DEFAULT_MAX_LATENCY, publisher
        )
        for name in ("STATE_VECTOR", "KAPPA_C_OK", "DQ_VECTOR")
    ]
    f32 = [
        ChannelMeta(
            f"{ifo}:GDS-CALIB_{name}", "float32", 16, DEFAULT_STRIDE, DEFAULT_MAX_LATENCY, publisher
        )
        for name in ("KAPPA_C", "F_CC", "KAPPA_TST_REAL", "KAPPA_PUM_REAL")
    ]
    return f64 + i32 + f32


def default_channels(ifo: str) -> list[ChannelMeta]:
    """The default channel set of ``ifo`` (``H1`` or ``L1``), in load order."""
    if ifo not in _COUNTS:
        raise ValueError(f"no default channel set for {ifo!r} (have {sorted(_COUNTS)})")
    publisher = f"MOCK_{ifo}"
    out = _gds(ifo, publisher)
    for subsystem, count in _COUNTS[ifo].items():
        sensors, signals, suffixes, rates = _PARTS[subsystem]
        names = itertools.product(sensors, signals, suffixes)
        for i, (sensor, signal, suffix) in enumerate(itertools.islice(names, count)):
            out.append(
                ChannelMeta(
                    f"{ifo}:{subsystem}-{sensor}_{signal}_{suffix}",
                    "float32",
                    rates[i % len(rates)],
                    DEFAULT_STRIDE,
                    DEFAULT_MAX_LATENCY,
                    publisher,
                )
            )
    return out
