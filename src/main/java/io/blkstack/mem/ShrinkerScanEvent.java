package io.blkstack.mem;

import jdk.jfr.Category;
import jdk.jfr.Description;
import jdk.jfr.Label;
import jdk.jfr.Name;
import jdk.jfr.StackTrace;

/**
 * JFR: one shrinker's scan during reclaim, timed (rule 3 of DESIGN.md section 1: a scan must not
 * wait for I/O, so a long one on a recording is a finding). Committed only while a recording
 * enables it.
 */
@Name("blkstack.ShrinkerScan")
@Label("Shrinker Scan")
@Category({"blkstack", "Forward Progress"})
@Description("Reclaim asked a shrinker to free objects")
@StackTrace(false)
public final class ShrinkerScanEvent extends jdk.jfr.Event {

    @Label("Shrinker")
    public String shrinker;

    @Label("Objects Asked")
    public long toScan;

    @Label("Objects Freed")
    public long freed;
}
