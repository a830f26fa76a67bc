"""Site Recovery replication: disk images to page blobs, with recovery points and measured RPO.

The package is split so that the replicator container needs nothing but the standard library
and the azure-storage-blob SDK:

    core     change tracking, Put Page coalescing, disk hashes, manifests, pruning, health
             (pure; unit-tested without an engine)
    store    the page-blob store: ``AzurePageStore`` (Azurite through the SDK) and
             ``MemoryPageStore`` (in memory, for unit tests)
    agent    the replicator process (ASR's process server), run in the ``replicator`` image
    control  the harness side: status, points, verify, restore and resync of a running lab

``core``, ``store`` and ``agent`` are copied into the replicator image (see
``harness.artifacts.REPLICATOR_CODE``); they must not import the rest of the harness.

Blob layout in the storage account:

    replicas/<host>/<disk>.img                the head page blob of one disk (its snapshots
                                              are the recovery points' data)
    recoverypoints/<host>/<seq:010d>.json     one published recovery point (a manifest)
"""
