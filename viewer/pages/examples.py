"""Copy-paste examples for sending a point to an axis, with this server's real addresses."""

from __future__ import annotations

import re
import shlex
from urllib.parse import urlsplit

from starlette.requests import Request

from rtdp.models import Feed
from rtdp.settings import Settings

WILDCARD_HOSTS = ("0.0.0.0", "::", "")
# A Host header worth showing back: a name or an IP literal, an optional port, nothing else.
PLAIN_HOST = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252})|\[[0-9A-Fa-f:.]{2,45}\])(?::[0-9]{1,5})?")


def base_url(request: Request, settings: Settings) -> str:
    """The web address people should use: settings.public_url (RTDP_PUBLIC_URL), else the origin this
    request came to if its Host header is a plain host[:port], else the address the server listens on.
    Only for the signed-in user's own pages, never for anything cached or sent to someone else."""
    if settings.public_url:
        return settings.public_url.rstrip("/")
    host = request.headers.get("host", "")
    if not PLAIN_HOST.fullmatch(host):
        host = str(settings.http)
    return f"{request.url.scheme}://{host}"


def mqtt_address(request: Request, settings: Settings) -> tuple[str, int]:
    if settings.broker is not None:
        return settings.broker.host, settings.broker.port
    host = settings.mqtt.host
    if host in WILDCARD_HOSTS:
        # Listening everywhere: the host name the browser used reaches the broker too.
        host = urlsplit(base_url(request, settings)).hostname or "127.0.0.1"
    return host, settings.mqtt.port


def examples_for(request: Request, settings: Settings, feed: Feed, axis: str) -> dict[str, str]:
    """topic, url and one snippet per client (curl, mosquitto_pub, paho, urllib)."""
    base = base_url(request, settings)
    host, port = mqtt_address(request, settings)
    topic = f"feeds/{feed.name}/{axis}"
    url = f"{base}/service/feed_input.json/{feed.name}/{axis}"
    sample_y = {"bool": "true", "int": "42"}.get(feed.y_cast, "3.14")
    curl = (
        f'curl -H "Authorization: Bearer $RTDP_TOKEN" {shlex.quote(url + "?y=" + sample_y)}\n'
        f"# or with your email and password, and an explicit time:\n"
        f"curl -u you@example.com {shlex.quote(url)} --data-urlencode 'x=2014-11-22 10:50:42.189' -d y={sample_y}"
    )
    mosquitto = (
        f'mosquitto_pub -h {shlex.quote(host)} -p {port} -q 1 -u token -P "$RTDP_TOKEN" '
        f"-t {shlex.quote(topic)} -m {sample_y}"
    )
    paho = (
        "# pip install paho-mqtt; export RTDP_TOKEN=<your token>\n"
        "import os\n\nimport paho.mqtt.client as mqtt\n\n"
        "client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)\n"
        'client.username_pw_set("token", os.environ["RTDP_TOKEN"])\n'
        f"client.connect({host!r}, {port})\n"
        "client.loop_start()\n"
        f"client.publish({topic!r}, {sample_y!r}, qos=1).wait_for_publish()\n"
        "client.loop_stop()\n"
        "client.disconnect()"
    )
    stdlib = (
        "import os\nimport urllib.parse\nimport urllib.request\n\n"
        f"url = {url!r} + '?' + urllib.parse.urlencode({{'y': {sample_y!r}}})\n"
        "request = urllib.request.Request(url, headers={'Authorization': 'Bearer ' + os.environ['RTDP_TOKEN']})\n"
        "with urllib.request.urlopen(request) as response:\n"
        "    print(response.read().decode())"
    )
    return {"topic": topic, "url": url, "curl": curl, "mosquitto_pub": mosquitto, "paho": paho, "urllib": stdlib}
