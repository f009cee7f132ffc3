"""Summary of a store for `vtc info`."""

from __future__ import annotations

from pathlib import Path

from vtc.cache import Store


def store_info(path: str | Path) -> dict:
    st = Store.open(path)
    done, failed = st.done(), st.failed()
    summary: dict = {
        "videos done": len(done),
        "videos failed": len(failed),
        "bytes on disk": f"{st.nbytes():,}",
    }
    if st.kind == "features":
        frames = [e.get("n_frames", 0) for e in done.values()]
        enc = st.meta["identity"]["encoder"]
        summary.update(
            {
                "frames": sum(frames),
                "tokens per frame": enc["grid"][0] * enc["grid"][1] if enc["grid"] else "per video",
                "feature dim": enc["dim"],
                "encoder": enc["model"],
                "layer": enc["layer"],
                "sampling": st.meta["identity"]["sampling"],
            }
        )
    else:
        n_in = sum(e["n_input_tokens"] for e in done.values())
        from vtc.families import stock_tokens_of

        n_llm = [e["n_llm_tokens"] for e in done.values()]
        stock = sum(stock_tokens_of(st, vid) for vid in done)
        summary.update(
            {
                "method": st.meta["identity"]["method"],
                "parent": st.meta["identity"]["parent"]["path"],
                "tokens in": n_in,
                "LLM tokens": sum(n_llm),
                "retained (of input tokens)": f"{100 * sum(n_llm) / n_in:.2f}%" if n_in else "-",
                "retained (of stock tokens)": f"{100 * sum(n_llm) / stock:.2f}%" if stock else "-",
                "LLM tokens per video (min/mean/max)": (
                    f"{min(n_llm)} / {sum(n_llm) / len(n_llm):.1f} / {max(n_llm)}" if n_llm else "-"
                ),
            }
        )
        fl = [e["module_flops"] for e in done.values() if "module_flops" in e]
        if fl:
            summary["module FLOPs per video (mean, analytic)"] = f"{sum(fl) / len(fl):.3e}"
        secs = [e["reduce_s"] for e in done.values() if "reduce_s" in e]
        if secs:
            summary["reduce time per video (median)"] = f"{1000 * sorted(secs)[len(secs) // 2]:.1f} ms"
    summary["created"] = st.meta.get("created")
    summary["vtc"] = st.meta.get("versions", {}).get("vtc")
    return {
        "kind": st.kind,
        "path": str(path),
        "summary": summary,
        "identity": st.meta["identity"],
        "versions": st.meta.get("versions", {}),
        "failures": [{"id": k, **v} for k, v in failed.items()],
        "histogram": histogram(
            [e.get("n_llm_tokens" if st.kind == "tokens" else "n_frames", 0) for e in done.values()]
        ),
    }


def histogram(values: list[int], bins: int = 8) -> list[dict]:
    """Equal-width bins over [min, max]: [{"lo", "hi", "count"}] (one bin when all values are equal)."""
    if not values:
        return []
    lo, hi = min(values), max(values)
    if lo == hi:
        return [{"lo": lo, "hi": hi, "count": len(values)}]
    width = (hi - lo) / bins
    counts = [0] * bins
    for v in values:
        counts[min(int((v - lo) / width), bins - 1)] += 1
    return [
        {"lo": round(lo + i * width, 1), "hi": round(lo + (i + 1) * width, 1), "count": c}
        for i, c in enumerate(counts)
    ]
