"""Quickstart: align, federated IV, a joint scorecard, scores via the joint protocol (README)."""

from jointcredit.data import load_party_table, make_sme_data
from jointcredit.learn import FederatedBinning, HeteroScorecard
from jointcredit.session import JointSession

if __name__ == "__main__":
    data = make_sme_data(seed=0, n_enterprises=6000, n_bank_customers=2000)
    bank = load_party_table(data.bank, id_col="id", label_col="default_12m", id_kind="uscc")
    center = load_party_table(data.center, id_col="id", id_kind="uscc")

    session = JointSession.in_process(bank, center)
    session.align()

    binning = FederatedBinning().fit(session)
    print(binning.iv_table_.head())
    scorecard = HeteroScorecard(pdo=50, base_score=600, base_odds=19).fit(session)
    pd_bad = scorecard.predict_proba(session)[:, 1]
    print(pd_bad[:5])
    print(session.transcript.summary())
