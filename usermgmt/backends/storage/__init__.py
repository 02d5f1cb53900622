"""Blob storage backends beyond memory (``STORAGE_BACKEND``).

=============  ================================================================
``memory``     :class:`~usermgmt.backends.memory.MemoryBlobStorage` (tests, demos)
``local``      :class:`~usermgmt.backends.storage.local.LocalBlobStorage`: a directory
``s3``         :class:`~usermgmt.backends.storage.s3.S3BlobStorage`: boto3 (extra
               ``aws``), with S3 Object Lock retention; imported only when selected
=============  ================================================================

Every backend is write-once (see :class:`~usermgmt.ports.BlobStorage`) and passes
:class:`~usermgmt.testing.contracts.BlobStorageContract`.
"""
