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
                "tokens per frame": enc["grid"][0] * enc["grid"][1],
                "feature dim": enc["dim"],
                "encoder": enc["model"],
                "layer": enc["layer"],
                "sampling": st.meta["identity"]["sampling"],
            }
        )
    else:
        n_in = sum(e["n_input_tokens"] for e in done.values())
        from vtc.stages.compress import stock_llm_tokens

        n_llm = [e["n_llm_tokens"] for e in done.values()]
        grid = st.meta.get("parent_identity", {}).get("encoder", {}).get("grid", [27, 27])
        stock = sum(stock_llm_tokens(e["n_frames"], grid) for e in done.values())
        summary.update(
            {
                "method": st.meta["identity"]["method"],
                "parent": st.meta["identity"]["parent"]["path"],
                "tokens in": n_in,
                "LLM tokens": sum(n_llm),
                "retained (of input tokens)": f"{100 * sum(n_llm) / n_in:.2f}%" if n_in else "-",
                "retained (of stock LLaVA-OV tokens)": f"{100 * sum(n_llm) / stock:.2f}%" if stock else "-",
                "LLM tokens per video (min/mean/max)": (
                    f"{min(n_llm)} / {sum(n_llm) / len(n_llm):.1f} / {max(n_llm)}" if n_llm else "-"
                ),
            }
        )
    summary["created"] = st.meta.get("created")
    summary["vtc"] = st.meta.get("versions", {}).get("vtc")
    return {
        "kind": st.kind,
        "path": str(path),
        "summary": summary,
        "identity": st.meta["identity"],
        "versions": st.meta.get("versions", {}),
        "failures": [{"id": k, **v} for k, v in failed.items()],
    }
