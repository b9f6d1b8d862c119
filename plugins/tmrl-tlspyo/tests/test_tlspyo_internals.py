"""The parts of tlspyo this plugin builds on, checked against the installed tlspyo so that an upgrade that changes
them fails here, by name, instead of as a hang or an obscure error in a running relay.

The plugin subclasses tlspyo 0.3's Twisted protocols and its Server/Client bookkeeping (see ``relay.py`` and
``endpoint.py``); it no longer subclasses tlspyo's ``Relay`` or ``Endpoint`` and sets none of their name-mangled
attributes. What follows is everything it reads, writes or overrides there.
"""

from __future__ import annotations

import inspect
from importlib.metadata import version

import tlspyo.client
import tlspyo.server
from tlspyo.local_protocol_for_client import LocalProtocolForClient, LocalProtocolForClientFactory
from tlspyo.local_protocol_for_server import LocalProtocolForServer, LocalProtocolForServerFactory
from tmrl_tlspyo.serialization import Deserializer, serialize


def test_the_installed_tlspyo_is_the_version_this_plugin_was_written_for() -> None:
    major, minor = (int(part) for part in version("tlspyo").split(".")[:2])
    assert (major, minor) == (0, 3), "tlspyo changed: check relay.py and endpoint.py against it, then this test"


def test_the_server_side_internals_the_relay_uses_exist() -> None:
    server = tlspyo.server.Server(
        port=1, password="p", serializer=serialize, deserializer=Deserializer(1024), local_com_port=2, header_size=10
    )
    for name in ("to_clients", "group_info", "pending_acks", "ack_stamp", "serializer", "_security", "_keys_dir",
                 "_port", "_local_com_port", "_reactor"):  # fmt: skip
        assert hasattr(server, name), f"tlspyo.server.Server has no {name}"
    for method in ("add_client", "delete_client", "has_client"):
        assert callable(getattr(server, method, None)), f"tlspyo.server.Server has no {method}()"
    protocol = tlspyo.server.ServerProtocol(server)
    for name in ("_server", "_identifier", "_state", "_password"):
        assert hasattr(protocol, name), f"tlspyo.server.ServerProtocol has no {name}"
    for method in ("send_ack", "get_state", "connectionMade"):
        assert callable(getattr(protocol, method, None)), f"tlspyo.server.ServerProtocol has no {method}()"
    assert list(inspect.signature(tlspyo.server.ServerProtocolFactory.__init__).parameters) == ["self", "server"]
    assert LocalProtocolForServer(server)._server is server
    assert LocalProtocolForServerFactory(server).server is server


def test_the_client_side_internals_the_endpoint_uses_exist() -> None:
    client = tlspyo.client.Client(
        ip_server="127.0.0.1", port_server=1, password="p", serializer=serialize, deserializer=Deserializer(1024),
        groups=("workers",), local_com_port=2, security="TCP", recon_max_delay=1.0, recon_initial_delay=0.5,
    )  # fmt: skip
    for name in ("to_server", "endpoint", "store", "ack_stamp", "pending_acks", "serializer", "deserializer",
                 "password", "groups", "header_size", "_ip_server", "_port_server", "_local_com_port", "_security",
                 "_keys_dir", "_hostname", "_reactor"):  # fmt: skip
        assert hasattr(client, name), f"tlspyo.client.Client has no {name}"
    assert callable(getattr(client, "check_acks", None))
    protocol = tlspyo.client.ClientProtocol(client=client, password="p", groups=("workers",), header_size=10)
    for name in ("_client", "_password", "_groups", "_state"):
        assert hasattr(protocol, name), f"tlspyo.client.ClientProtocol has no {name}"
    for method in ("send_ack", "get_state", "connectionMade", "connectionLost"):
        assert callable(getattr(protocol, method, None)), f"tlspyo.client.ClientProtocol has no {method}()"
    factory = tlspyo.client.TLSClientFactory(client)
    for name in ("_client", "password", "_groups", "_header_size"):
        assert hasattr(factory, name), f"tlspyo.client.TLSClientFactory has no {name}"
    assert issubclass(tlspyo.client.TLSClientFactory, tlspyo.client.ReconnectingClientFactory)
    assert LocalProtocolForClient(client)._client is client
    assert LocalProtocolForClientFactory(client).client is client
