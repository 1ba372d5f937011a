"""The Flower ClientApp: one SuperNode serving one user with :class:`~.node.Node`.

Run by ``flower-supernode --node-config 'user="<id>" node-dir="<dir>" data-path="<file>"'``.
A refusal or failure on the node becomes Flower's error reply, which the server treats as the
in-process code treats a rejected client: the round goes on without it.
"""

from __future__ import annotations

from flwr.app import Context, Error, Message
from flwr.clientapp import ClientApp

from ffm_private.errors import FFMPrivateError
from ffm_private.flower.node import Node, handle
from ffm_private.flower.records import from_record, to_record

#: Error code carried by a node's refusal (a typed error of the toolkit).
REFUSED = 1

app = ClientApp()


def _answer(msg: Message, context: Context, kind: str) -> Message:
    try:
        arrays, values = from_record(msg.content)
        out_arrays, out_values = handle(Node(context.node_config), kind, arrays, values)
    except FFMPrivateError as err:
        return Message(error=Error(code=REFUSED, reason=str(err)), reply_to=msg)
    return Message(to_record(out_arrays, out_values), reply_to=msg)


@app.query()
def query(msg: Message, context: Context) -> Message:
    return _answer(msg, context, "query")


@app.train()
def train(msg: Message, context: Context) -> Message:
    return _answer(msg, context, "train")


@app.train("secagg")
def secagg(msg: Message, context: Context) -> Message:
    return _answer(msg, context, "secagg")


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    return _answer(msg, context, "evaluate")
