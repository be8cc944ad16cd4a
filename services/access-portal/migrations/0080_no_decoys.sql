-- A number that is not the one on file is now told plainly (only the holder of the whole link may ask
-- for a code: every request proves the link), so no decoy challenge is made any more. The decoys left
-- are deleted. The column stays for this release: replicas of the previous release still write it while
-- this one rolls out (the new code skips such rows); the next release's migration drops it.
delete from challenge where decoy;
