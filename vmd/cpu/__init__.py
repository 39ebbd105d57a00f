"""The s390x CPU engine: guest code runs in a patched Unicorn, privileged work traps to vmd."""
