"""The spine as data: vertebral-unit (VU) labels, regions and mSASSS corners.

A VU spans from the middle of one vertebra to the middle of the next, so it holds
one disc and two vertebral corners facing each other (see ``DOMAIN.md``). The
ASspiMRI-a scores all 23 VUs from C2/3 to L5/S1; the mSASSS scores the anterior
corners from the lower corner of C2 to the upper corner of T1 and from the lower
corner of T12 to the upper corner of S1 (Creemers et al., Ann Rheum Dis
2005;64:127-129), i.e. both corners of 12 VUs.

In a VU table the two corners of a VU are the columns ``msasss_upper_w{week}``
(the lower corner of the upper vertebra) and ``msasss_lower_w{week}`` (the upper
corner of the lower vertebra).
"""

from __future__ import annotations

import re

CERVICAL = ("C2", "C3", "C4", "C5", "C6", "C7")
THORACIC = tuple(f"T{i}" for i in range(1, 13))
LUMBAR = ("L1", "L2", "L3", "L4", "L5")
VERTEBRAE = (*CERVICAL, *THORACIC, *LUMBAR, "S1")


def _vu_label(upper: str, lower: str) -> str:
    """``C2``+``C3`` → ``C2/3``; a change of letter keeps it (``C7``+``T1`` → ``C7/T1``)."""
    if upper[0] == lower[0]:
        return f"{upper}/{lower[1:]}"
    return f"{upper}/{lower}"


#: The 23 VU labels in cranio-caudal order, C2/3 … L5/S1.
VU_LABELS: tuple[str, ...] = tuple(
    _vu_label(VERTEBRAE[i], VERTEBRAE[i + 1]) for i in range(len(VERTEBRAE) - 1)
)

#: Upper and lower vertebra of each VU.
VU_VERTEBRAE: dict[str, tuple[str, str]] = {
    _vu_label(VERTEBRAE[i], VERTEBRAE[i + 1]): (VERTEBRAE[i], VERTEBRAE[i + 1])
    for i in range(len(VERTEBRAE) - 1)
}


def check_vu(vu: str) -> str:
    """Return ``vu`` if it is one of the 23 labels, else raise ``ValueError`` naming it."""
    if vu not in VU_VERTEBRAE:
        raise ValueError(
            f"unknown vertebral unit {vu!r}; expected one of C2/3 … L5/S1 (e.g. 'C7/T1', 'T12/L1')"
        )
    return vu


def region(vu: str) -> str:
    """Region of a VU: ``cervical`` for C2/3…C7/T1, ``lumbar`` for T12/L1…L5/S1 and
    ``thoracic`` for T1/2…T11/12.

    The thoracolumbar VU T12/L1 is scored by the mSASSS with the lumbar spine, so it
    counts as lumbar here; C7/T1 is scored with the cervical spine.
    """
    check_vu(vu)
    upper, _ = VU_VERTEBRAE[vu]
    if upper.startswith("C"):
        return "cervical"
    if upper.startswith("L") or upper == "T12":
        return "lumbar"
    return "thoracic"


#: Region of each of the 23 VUs.
VU_REGION: dict[str, str] = {vu: region(vu) for vu in VU_LABELS}

#: The 12 VUs whose two corners the mSASSS scores: C2/3…C7/T1 and T12/L1…L5/S1.
MSASSS_VUS: tuple[str, ...] = tuple(vu for vu in VU_LABELS if VU_REGION[vu] != "thoracic")

#: VU → (corner of the upper vertebra, corner of the lower vertebra), e.g.
#: ``C2/3`` → (``C2 lower``, ``C3 upper``), for the 12 mSASSS VUs.
MSASSS_CORNERS: dict[str, tuple[str, str]] = {
    vu: (f"{VU_VERTEBRAE[vu][0]} lower", f"{VU_VERTEBRAE[vu][1]} upper") for vu in MSASSS_VUS
}

#: The 24 mSASSS corners in order.
CORNERS: tuple[str, ...] = tuple(c for vu in MSASSS_VUS for c in MSASSS_CORNERS[vu])

#: Score ranges.
ASSPIMRI_RANGE = (0, 6)  # ASspiMRI-a per VU (Braun et al., Arthritis Rheum 2003;48:1126-36)
MSASSS_RANGE = (0, 3)  # mSASSS per corner (Creemers et al., Ann Rheum Dis 2005;64:127-9)


def vu_index(vu: str) -> int:
    """Position of a VU along the spine, 0 for C2/3 to 22 for L5/S1."""
    return VU_LABELS.index(check_vu(vu))


def is_msasss_vu(vu: str) -> bool:
    """True for the 12 VUs with both corners in the mSASSS."""
    return check_vu(vu) in MSASSS_CORNERS


#: A level label as trials write it: a vertebra, a separator (``-``, ``/``, ``_``, a
#: dash or a space), then the next vertebra with or without its letter, e.g.
#: ``C2-C3``, ``c2/3``, ``C2/C3``, ``C2-3``, ``L5-S1``, `` t12 / l1 ``.
_LABEL_RE = re.compile(
    r"^\s*([CTLS])\s*(\d{1,2})\s*(?:[-/_\u2013\u2014]|\s)\s*([CTLS])?\s*(\d{1,2})\s*$",
    re.IGNORECASE,
)


def normalise_vu(label: object) -> str | None:
    """The spine's label (``C2/3`` … ``L5/S1``) for a level label as trials write it.

    Accepts the labels of :data:`VU_LABELS` in any case and the usual variants:
    ``C2-C3``, ``c2/3``, ``C2/C3``, ``C2-3``, ``C2 - 3``, ``L5-S1``, ``T12-L1``,
    ``C7/T1``, with spaces around them. Returns ``None`` for anything else, including
    two vertebrae that are not neighbours (``C2-C4``).
    """
    if not isinstance(label, str):
        return None
    m = _LABEL_RE.match(label)
    if m is None:
        return None
    first = f"{m.group(1).upper()}{int(m.group(2))}"
    second = f"{(m.group(3) or m.group(1)).upper()}{int(m.group(4))}"
    vu = _vu_label(first, second)
    return vu if VU_VERTEBRAE.get(vu) == (first, second) else None


def vu_label_changes(counts: dict[str, int], where: str = "") -> tuple[dict[str, str], list[str]]:
    """The labels of ``counts`` (label → number of rows) that :func:`normalise_vu`
    changes, and one note per distinct label saying what it was read as.

    Labels it cannot read are left alone (the panel's checks name them).
    """
    changes: dict[str, str] = {}
    notes: list[str] = []
    prefix = f"{where}: " if where else ""
    for raw, n in counts.items():
        canon = normalise_vu(raw)
        if canon is not None and canon != raw:
            changes[raw] = canon
            rows = "row" if n == 1 else "rows"
            notes.append(
                f"{prefix}column 'vu': {raw!r} read as {canon!r} ({n} {rows}; the spine's "
                "label written in another case or spelling)"
            )
    return changes, notes
