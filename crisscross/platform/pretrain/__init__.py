"""The pretraining job on the driver: `job` (check inputs, run the Ray Train job, track it),
`quickstart`, the run folder's record (`run_record`), resume (`resume`, `resume_check`), stop
signals (`stopping`) and the loss plot."""
