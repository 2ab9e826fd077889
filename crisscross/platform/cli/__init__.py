"""The commands of the jobs, one module per group: parse, then import the job and run it.

Each command imports its job inside its body, so that `crisscross --help` starts without torch,
Ray, MLflow or PyAV; `common` holds what every command shares (the bad-input exceptions, the
--set option, exit statuses). The root group is `crisscross/cli.py`.
"""
