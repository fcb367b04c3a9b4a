"""The media plane as the WHIP/WHEP front door sees it: the node in this process, or the cluster's nodes
over the bus. `MediaPlane` is what the HTTP edge calls; it never touches an SFU object itself."""
