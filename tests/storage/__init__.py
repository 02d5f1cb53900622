"""Blob storage backends (memory, local directory, S3 on moto's server with Object Lock)."""
