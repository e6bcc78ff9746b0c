"""`tapedeck compile`'s exit codes, apart from the compiler: the operator's Job failure
policy reads them, and the operator's image has no PyAV."""

EXIT_OK = 0
EXIT_FAILED = 1  # the session is `failed`, with its error recorded
EXIT_RETRY = 75  # EX_TEMPFAIL: storage unreachable; run again later
