"""Doing the work: the processor that works one case, a whole run (intake, process,
report, exit status), the unattended scheduler, and the crash points the chaos proof uses."""
