"""Canary rollouts: router/ (traffic split by model version), metrics/ (per-version evidence),
judge (sequential statistical verdicts), policy (steps and bakes), state (write-ahead, lock in the
model store), driver, waves (clusters in wave order), report (HTML + PNG).

The driver knows the router and the metrics source only through their interfaces
(router/base.py, metrics/base.py); the judge knows only `evidence.py`.
"""
