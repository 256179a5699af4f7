"""`flotilla`: the command line for people and scripts working with a Flotilla deployment.

Every queue call goes through the official `taskcluster.aio` client; events come from the
queue's RabbitMQ exchanges. One module per command area; pure planning and parsing live
in modules with no I/O (envfile, documents, definitions, graph, bindings, groupstate).
"""
