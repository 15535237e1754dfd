"""The default broker: kombu's filesystem transport, with every message written whole.

kombu writes a message straight into its final file, so a worker polling the folder at that
moment can take the file while it is still empty, fail to decode it and stop ("Unrecoverable
error: JSONDecodeError", celery/kombu#1551): seen when beat's sweep sent a task while the
worker polled the same queue. Here a message is written under a name no reader takes, then
renamed into the queue, whole, in one step."""

from __future__ import annotations

import os
import uuid
from time import monotonic

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps


class Channel(filesystem.Channel):
    def _put(self, queue, payload, **kwargs):
        """Put `payload` onto `queue` under kombu's name (its time orders the queue)."""
        name = f"{round(monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        # A reader takes only names ending in ".<queue>.msg"; this one it skips.
        partial = os.path.join(self.data_folder_out, f".partial-{uuid.uuid4()}")
        try:
            with open(partial, "wb") as f:
                f.write(str_to_bytes(dumps(payload)))
            os.replace(partial, os.path.join(self.data_folder_out, name))
        except OSError as exc:
            raise ChannelError(f"Cannot add file {name!r} to directory") from exc


class Transport(filesystem.Transport):
    Channel = Channel
