"""The evaluation jobs: `common` (labelled sets, folds, weights, the fold skeleton), `finetune`,
`frozen` (SVM and linear probe), `report` (the results table from MLflow) and `sources` (what
`--pretrained` may name)."""
