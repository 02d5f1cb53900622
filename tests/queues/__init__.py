"""RQ queues against real peers on loopback: a redis-server, ``usermgmt worker`` and
``usermgmt schedule`` as subprocesses, an aiosmtpd sink."""
