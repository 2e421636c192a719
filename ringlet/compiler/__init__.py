"""From a torch module to a compiled model: graph capture and lowering (:mod:`~.capture`) into a
:class:`~.graph.LoweredGraph` of ringlet ops (:mod:`~.ops`, one handler set per node kind), its
interpreters (:mod:`~.interpret`), input ranges (:mod:`~.ranges`), the activation config
(:mod:`~.config`), storage (:mod:`~.storage`) and the compiled model that runs on shares
(:mod:`~.model`)."""
