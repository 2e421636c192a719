"""Running a compiled model privately: the client's and servers' programs (:mod:`~.programs`), a
whole job on this machine (:mod:`~.inference`) and its parties as threads or processes
(:mod:`~.launch`)."""
