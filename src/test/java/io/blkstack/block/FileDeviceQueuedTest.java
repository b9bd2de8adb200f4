package io.blkstack.block;

import io.blkstack.kernel.Policies;
import io.blkstack.kernel.PolicySwitch;

/**
 * Every {@link FileDeviceTest} again with {@code direct-issue=legacy}: each bio is queued for the
 * device's I/O tasks, none is served by its submitter, so both submission paths pass the same tests.
 */
class FileDeviceQueuedTest extends FileDeviceTest {

    @Override
    Policies policies() {
        return Policies.defaults().with(PolicySwitch.DIRECT_ISSUE, PolicySwitch.LEGACY);
    }
}
