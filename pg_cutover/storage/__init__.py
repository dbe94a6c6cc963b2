"""S3-compatible object storage (boto3): uploads with checksums, downloads, listings."""
