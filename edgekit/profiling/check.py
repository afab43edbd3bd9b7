"""`edgekit boards --check`: connect to each board and report what it has."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from ..errors import EdgekitError
from .session import open_session


def _thermal(fp: dict) -> str | None:
    temps = fp.get("temperatures_c") or {}
    parts = []
    if temps:
        parts.append(f"{max(temps.values()):.0f} C")
    bits = fp.get("throttled_bits")
    if bits is not None:
        parts.append("THROTTLED" if bits & 0xF else ("throttled earlier" if bits else "not throttled"))
    return ", ".join(parts) or None


def check_board(board, known_hosts=None, accept_new_host=False) -> dict:
    report = {"board": board.name, "host": board.host or "localhost", "profile": board.profile, "reachable": False}
    try:
        session = open_session(board, known_hosts=known_hosts, accept_new_host=accept_new_host)
    except EdgekitError as e:
        report["error"] = str(e)
        return report
    try:
        p = session.probe
        fp = p.get("fingerprint") or {}
        rt = session.runtime
        report.update(
            reachable=True, python=fp.get("python"), numpy=fp.get("numpy"),
            runtime=f"{rt['name']} {rt['version']}" if rt else None, runtimes=p.get("runtimes"),
            delegates=[d for d, present in (p.get("delegates") or {}).items() if present],
            cpu=fp.get("cpu_model"), cores=fp.get("cpu_count"),
            memory_mb=round(fp["mem_total_kb"] / 1024) if fp.get("mem_total_kb") else None,
            governor=fp.get("governor"), throttling=_thermal(fp), fingerprint=fp)
        report["emulated"] = bool(fp.get("emulated"))
        report["warnings"] = _software_differs(board.profile, fp)
        if rt is None:
            report["error"] = "no TFLite runtime installed for this Python"
    finally:
        session.close()
    return report


def _software_differs(profile_name: str, fp: dict) -> list[str]:
    """Where the board's software is not what its device profile states (os / python / numpy)."""
    from ..profiles import load_profile
    stated = load_profile(profile_name).software
    return [f"{k} is {fp.get(k)!r} but profile {profile_name} states {v!r}" for k, v in vars(stated).items()
            if v is not None and fp.get(k) is not None and str(fp.get(k)) != v]


def check_boards(boards, known_hosts=None, accept_new_host=False) -> list[dict]:
    with ThreadPoolExecutor(max_workers=max(1, min(8, len(boards)))) as pool:
        return list(pool.map(lambda b: check_board(b, known_hosts, accept_new_host), boards))
