"""The emulated AWS endpoint: moto's server, with the fixes for defects of moto itself that
real AWS does not have (each named, so it can go when moto fixes it).

    python emulated_aws.py -H ADDRESS -p PORT     (the arguments of moto_server)
"""

from moto.kms.models import KmsBackend
from moto.server import main

_schedule_key_deletion = KmsBackend.schedule_key_deletion


def schedule_key_deletion(self, key_id, pending_window_in_days):
    # moto 5.2.5 looks the KeyId up as given, so a key ARN (which amazon.aws.kms_key sends,
    # and AWS accepts) fails with an internal error.
    return _schedule_key_deletion(self, self.get_key_id(key_id), pending_window_in_days)


KmsBackend.schedule_key_deletion = schedule_key_deletion

if __name__ == "__main__":
    main()
