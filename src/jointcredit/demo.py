"""``jointcredit demo``: the whole joint-modeling path on built-in synthetic SME data.

1. generate a city's credit-center table and one bank's customers (valid USCC ids);
2. align them with ECDH PSI over the authenticated in-process channel;
3. train the plaintext references (bank only; joined = INSECURE upper bound);
4. train the joint models (scorecard under CKKS, SecureBoost under Paillier);
5. write ``summary.json`` and print a short summary.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightgbm as lgb

from jointcredit import workflow
from jointcredit.data import LGBM_REFERENCE_PARAMS, make_sme_data
from jointcredit.learn.plaintext import evaluate_plaintext
from jointcredit.session import JointSession

LABEL = "default_12m"


def run_demo(
    out: Path,
    *,
    seed: int = 0,
    quick: bool = False,
    progress: Callable[[str], None] = print,
) -> dict[str, Any]:
    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    sizes = {"n_enterprises": 20_000, "n_bank_customers": 5_000} if quick else {}
    progress("generating synthetic SME data (credit center + bank)")
    data = make_sme_data(seed=seed, **sizes)
    bank, center = workflow.load_parties(
        data.bank, data.center, id_col="id", id_kind="uscc", label_col=LABEL
    )
    progress(f"aligning {bank.n_rows} bank customers with {center.n_rows} enterprises (PSI)")
    session = JointSession.in_process(bank, center)
    alignment = workflow.align(session)

    y = session.bank.aligned_labels()
    train_rows, test_rows = workflow.split_rows(y, test_size=0.3, seed=seed)
    xb = session.bank.aligned_features()
    xc = session.center.aligned_features()  # only the insecure reference below reads this
    joined = xb.join(xc, rsuffix="_center")

    progress("training plaintext references (LightGBM, 1 thread)")

    def reference_model() -> lgb.LGBMClassifier:
        return lgb.LGBMClassifier(random_state=seed, **LGBM_REFERENCE_PARAMS)

    references = {
        "bank_only_lightgbm": evaluate_plaintext(
            reference_model,
            xb.iloc[train_rows], y[train_rows], xb.iloc[test_rows], y[test_rows],
        ),
        "joined_lightgbm_INSECURE_REFERENCE": evaluate_plaintext(
            reference_model,
            joined.iloc[train_rows], y[train_rows], joined.iloc[test_rows], y[test_rows],
        ),
    }  # fmt: skip

    joint: dict[str, Any] = {}
    models: dict[str, Any] = {}
    for model in ("scorecard", "secureboost"):
        progress(f"training joint {model} (encrypted)")
        result = workflow.train(session, model, train_rows, test_rows)
        joint[model] = result["metrics"]
        models[model] = result["model"]

    progress("pre-authorizing the bank's customers with the joint scorecard (encrypted scoring)")
    from jointcredit.scoring.preauth import preauthorize

    decisions, preauth = preauthorize(
        session, models["scorecard"], list(data.bank["id"]), bank_id="demo-bank"
    )
    decisions.to_csv(out / "preauth.csv", index=False)

    summary: dict[str, Any] = {
        "seed": seed,
        "data": {
            "center_rows": center.n_rows,
            "bank_rows": bank.n_rows,
            "bad_rate": round(float(y.mean()), 4),
        },
        "alignment": alignment,
        "split": {"n_train": len(train_rows), "n_test": len(test_rows)},
        "plaintext_references": references,
        "joint_models": joint,
        "pre_authorization": {k: v for k, v in preauth.items() if k != "excluded_ids"},
    }
    summary["seconds"] = round(time.perf_counter() - started, 1)
    workflow.write_json(out / "summary.json", summary)
    for name, model in models.items():
        if model is not None and hasattr(model, "save"):
            model.save(out / "models" / name / "bank")
    print(_format(summary, out))
    return summary


def _format(summary: dict[str, Any], out: Path) -> str:
    a = summary["alignment"]
    refs = summary["plaintext_references"]
    lines = [
        "",
        "jointcredit demo — synthetic city credit center + one bank",
        f"  aligned {a['intersection_size']} of {a['bank_rows']} bank customers with "
        f"{a['center_rows']} enterprises by PSI in {a['seconds']:.1f} s ({a['round_trips']} round trips)",
        f"  bad rate {summary['data']['bad_rate']:.2%}; train {summary['split']['n_train']}, "
        f"test {summary['split']['n_test']}",
        "  test AUC / KS",
        f"    bank only, LightGBM (plaintext)            {refs['bank_only_lightgbm']['auc']:.4f} / "
        f"{refs['bank_only_lightgbm']['ks']:.4f}",
        f"    joined, LightGBM (INSECURE reference)      "
        f"{refs['joined_lightgbm_INSECURE_REFERENCE']['auc']:.4f} / "
        f"{refs['joined_lightgbm_INSECURE_REFERENCE']['ks']:.4f}",
    ]
    for name, m in summary["joint_models"].items():
        f = m["federated"]
        lines.append(
            f"    joint {name:<12} (encrypted)            {f['auc']:.4f} / {f['ks']:.4f}   "
            f"[{f['train_seconds']:.1f} s, {f['round_trips']} round trips, "
            f"{(f['bytes_bank_to_center'] + f['bytes_center_to_bank']) / 1e6:.1f} MB]"
        )
    pre = summary["pre_authorization"]
    grades = ", ".join(f"{g} {n}" for g, n in pre["pre_authorized_by_grade"].items() if n)
    excluded = ", ".join(f"{why} {n}" for why, n in pre["excluded"].items()) or "none"
    lines += [
        "  pre-authorization (joint scorecard, encrypted scoring)",
        f"    scored {pre['scored']} of {pre['requested']} candidates (excluded: {excluded})",
        f"    pre-authorized {pre['pre_authorized']} ({grades}); total credit lines "
        f"{pre['total_credit_line'] / 1e8:,.2f} 亿 CNY; list in {out / 'preauth.csv'}",
    ]
    lines.append(f"  wrote {out / 'summary.json'} ({summary['seconds']:.0f} s in all)")
    return "\n".join(lines)
