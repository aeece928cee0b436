"""The SDN controller process (`vimha sdn run`, issue 18): an os-ken OpenFlow application with
vimha's own launcher, one instance per member of the SDN service group."""
