# -*- coding: utf-8 -*-
# Copyright: Airstrip developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    """The check_mode and diff_mode attributes of the collection's modules.

    Use the standard fragment (what each attribute means) with one that says how much of it a
    module supports, e.g. [airstrip.airflow.attributes, airstrip.airflow.attributes.info]. A
    module's own attributes: block may add details; its keys win over the fragment's.
    """

    # What each attribute means; used together with one of the fragments below.
    DOCUMENTATION = r"""
options: {}
attributes:
  check_mode:
    description: Can run in check mode and return changed status prediction without modifying target.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check mode), when in diff mode.
"""

    # A module that changes things, and supports both check mode and diff.
    ALL = r"""
options: {}
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
"""

    # A module that changes things and supports check mode, but returns no diff.
    CHECK_MODE = r"""
options: {}
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
"""

    # A module that only reads.
    INFO = r"""
options: {}
attributes:
  check_mode:
    support: full
    details: Only reads; runs the same in check mode.
  diff_mode:
    support: N/A
    details: Changes nothing, so there is no diff.
"""
