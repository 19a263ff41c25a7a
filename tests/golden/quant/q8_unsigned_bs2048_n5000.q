82`|2x>N;R‚sAAUI6d2q”4d&HI[>"iEMFn]Y@[qI€S=U’„Gd@‚KpB¡E&an’S/O@Ž'FIXˆA„]Du*c#C EU*v‚D@i\!'9"AW‹%p+Q*;JkTŒ—B HAFrsNCGb,IOF
Ta±Œd†Ja„6ŠFmWE *AcŒ
€o-dBoB+RS”A|/BqT8TSh`Fv&…?E
Z–U!]@ 0U;mN6d€>‹Y+s>ŽjuL@I<P€GV^B#n#[)ˆACnmFYb(u?4QAkz@ƒ_?:#,LI…,3&4z~X/"Wo H$]G}A&E‚<.Ž@O(`g'ŠFI`%*5˜Tzˆ$"MFD™AR_~…²_t>lSvU%')6Fc&J `q?vD…‘))^!>‹%R C]FDA.G&3H@ICH"•M€Y‰^Q‰~LlO
†&\KHP:+vƒW$c=^€K„6M‡FLIdXžK‰>S_$O@I9IY
?qzTMqipp'F2@•‹*<NgDmZ|**- l
N!Y>WA)PIQW4@HBlT‚$W@
b ,bGO}‰„Y7^‡VTlIQÐ4N‰!4(H/+nOR¡Œj)YK>Š‚LD}+L/
‡-$™R-?I;#9WE*D5)G3„S:o‡\!C*rk8 {\MB"@€@GŒA
'_]QN`“}0I* gVYK…L8<#HI¬L.<M˜MLU-Rtˆ0A5
5dd>ƒATPFPNq˜(mO$WI,Yl>ƒ(}9Ž!5@EˆN)‚C^?N<"]ƒAS*rFb\L@d?'A:D„#ž‚6|WA ‚Pd;ESW#FPNDxCkkG$2%I€@[… ¯CC@\Bf@?z!ŽR,.F3 ZvCr?%@5A
nO`eb.C A}nu‡§pH"Nƒ?jS E@.K€¨*)$GD \'J@†A7]‚vƒBtLU…M!2[/Y,Js-Fš'Ž&2+%@W‡=kC.+1-Lj-†£UA‡zC'Q–ÿP2:!Dm_I#™MA`Fz†X…_Az]C¿bf^s?R&8ˆS!Hqˆw,„H‡G„ƒ@ƒGn#MV|#ZˆRFI~&B~†Eƒ|\?-C~HJ‹!<Qcgƒyƒ'‡BX‰SA(^D…3œ‡d".pS2\0GH1Ft4¬E^j HXt
S“e F;QUBPGFY‰lŒSj[#ˆ]+G—N>PI€.NN3€’„€€Bw€v$BAl‰F$B{Mq!† €B"QPB€\TG‰hD@…kZ"NA&Qhˆ€SZ\yNf‘P–'"v\FQly%'‹1cy&fd<zNFCB*bII˜XF+CUZ%@£ ŽIJGSyy9dƒ#D6/@=C *ÀÆ@[ƒBEHƒBH]PAŒ@(F"Prš‡G@K™EE‡T!cV%>&]CLc=“@<zKÃIG6S,R?<:DC„C"\LT‚ ¦#!BX‹'LDPJPc?-YAZ¢ZUl{)l~Š:RIS)
A‘;(AB?SkAbw"AG'^lWt°†7vJ%V?K+AˆzH>NqVY°„G@?SUG@KS„€HR\;ƒŠ’ ^IP:\h 4I˜Ii*,@\yr¸W06
‡M|~A-‚aND…GDX‚~Œ@$Œ0$mOC6m@PFW bHE#k@0)F'x"œm`Ÿ@!8IGvn|IHI~Šh‹ T"ƒ%c… 1yFK#P!&X‚C![U$!‚A }…""IUwU'P†Q,l'cu+ªhahFD2:5N?+3@
?@›ˆƒ$k_CdaRWl#J.€G(r*l[L]I>r8@i¤j#S>5? †~@`~!?A2{‹8‚9H‘A…c@…Bq)Ž5'`6‡†q<CD!Bw\EFAr6H9fsD/#ƒE$G‚ADP~Q)ŒPzdŒ6^1_‘SEKE;rGE‹0hHAAOV]CHHIA[Ž=KP.PaPR=„0S#KY&B%Oi‚DLN|d_jD‚—$M6!D¡tƒ%*'!PH‚‚(;@X_:nAXN6HG‡H,S.yA(
NS+Ra•BBM0[e{
ŒSA8IVTV`N>F‚†Y„AV\@  1F¢Cy$P?OkJ…„]I1JO#&l‰ˆ>u$P%q‰WŠIZ=<ZG—8adAA"'*"c;)?_g~1IgDMKJT?=c*ƒr!‹F>Ÿ‰ˆ)(fU#B0(/DAPDISB€%Ž29vI*_#EJRZ,.;A-u?]KDn7*jw@F„?<QP?aTKM#qŠgŠ_¹+TWbŠ?@°j~®M‡4†BLsn‡™2
LžŠAh6E‹(MBmgk‚gR{‚JŠaITVB$rr„lR†6^‚)@/&2z#j&a)(\Dg~™<(2V;'DoSDaRS25›RWCB:NFGK?=@”F^Œ$?5’‡H#'¸ERf=gB%>QX)«<ŠœÆg“£ƒr7pQTa!=yCS=G/$’OM
‚A7…#„ZŠC^@!|%?d)ZN%›cA¤‰qG;Œ…AK]"ÿ
I¥$2@—z;Y  3/S‘!![BV)…"“´4~+%¯Q^€]²`@FNF†(qTm-LCB&¢]dY'X^!>ˆaLA8AR3q*&vB`Q,S?’O:_KEq!^]S¾0BOM1G}ZH‰%S™87‹Bf->b9¡G<6"Y19€"t(¨z6DU<[W«~Bs„C•"œ"'•„3 7o†l£>v  L
…†5Io&S>as0u-‰ÅE(m1u€L?‘o?zei8RLhK~lN9LUƒ}:ø”‰GD!^–D?+²j”?ˆA–W‚M‘@†-A#%IE<s?#NG?ˆmr6?D‡i!4€d~BWcC8H~bK?•"1y€Iu›A‡>–I¡@‚€’=š‡dEˆD0`ToY&FS‡J@D*C2J
O@)*ŠXhNfF†‡A‰ˆFL‚O 
.X&KE¤Š Cn)D!ALC…I@8™ECE$TLˆ/?0~bAŽ–c])_‰@O-[Q-"Q@P+ˆiX8D1KSA#@o67?q‡BA@:6AYufRyKR†E …ŒD!j€PZN]‡3f‡Q!.<#±T,UKcM:>yeCM}QI’Œz<‡Ž#5JS€4rq9LIU4/ D!PJ¨ ƒ‘€kC‹ŒKŠDaM^]W¸–E…K0K¡xAq®sCj†R›gMD€&BF"iD#…OY?'ND pG©%Ll A@Š%P—Œƒh1|P€^Uk8oBlF@’}E‚zP„ jGkL„PV”/@RJ+&‡_@#A¥DtR@"b
u)y@€p?@SA¥y‰~ dp'IEZmt2š{CzG"€qAœ)0aK…V†G@CJ‚$D\“^n"_sŠ=GmŠdI*ˆ@[³A‚$:,/©AŽL†x?*CW™#Z6DM@ZQR„Yd€@yŽBRB‹B?<T1Qƒ‹4FT#‹!„°m$•‰@…ù7$/Gn€ƒ…iNJ,IC‡R%~C. CUg…+NG„5/ŠBÊgˆJjU—— H!”?.|]nC<l›
¤¾@.BTuF^€{ŠŸ*bqKo5Nƒ3?_OœRD‹;"j<P£JJDBF‡]„ MDTBˆH/‡X*G 9,/Q%s—>Q
“?-AFVF84‰PN)Z/–X%‡„c€„;qU€E@eL@K)BqHI‰¡Fh ‘!8wQ€D€WDSkAG›B#J$XY?‚@<t€
‡j“?? (`_Ccš€€…Z …>QD¢QxXj‡M:*¨‰4?Y’(„€R/‚P\ahG5]ƒMQ._R,7…’Q…:|Sq+$HFO"†T@‰)6PDNFBUA0NNQEb]T »Hae‰:^\Š(f[.Kb0H€C_TFˆ”r),e‚NÒ?„$:a†NfD\oA“BK‹”(@.-GBTƒ+•\I„JE>ƒŸFTƒE!=%Z5IkG-‡‘TwEbK&€vbuBA]P“‰@Cž”f\dK…2„e6PG—#)’ƒs,lh#PBBC-
[ƒ€a
G&YŒA|!€ L3_-…–¦+MFEudjŠ˜{CVh,@œ!I,†’L„€Y–‰N†?†H1$0QF†FaB lT?UT-@Ž
‹\J+HmYU€?&\…? 2#lCCƒq/i2‚ATSdnŠ-M%Xf%p„Aan
>2@)5&Dk€O4I_unƒ$HVZDVLAx@]~ŒCE%x’H¢'#89&]‰W$=-Ie ’T\'…›_L
X«[…2Q1?Zb>5h†\ƒ %"/‡ƒƒC4K™!\:~³‚97X|x/–/#{‡FA¯2†‹˜…
9&X‚F=
cr?w*Yp&…I‚€†!”³If6#Cs‡“>’+_GFM‡ƒƒµOŸºhŽv?sgOYœW%?4,TJ~sH‚çQœš4…Oˆ!¯[k’ÍETo“u€kP@X!lE?N>B@Y€Hu†0€-r@V¼GTAR-QH1xT,†–B–ƒH„"~~€$Qw@MO‡žDcÙqu’X'gFqf3.w(•‰$¢UBkAtM¶x@| ŠYQjCc"JDW8N>eB!L„X%.uKBƒG‘*|°‚@¯U|EƒnŠŠo"[K@’ÌrjŠo™”I#P!íw8@^£„FV Œ”O;Ii…Žd?GE?I[,tKz•)‡JJ¢[(?–…oŽ b!?L7KvT‰bŠƒ†˜0¦†L„“è‰.GžI“&aG‚m—g|D‚Œ!šh†ZTZøQ' qDÂBe*«d@MWnA„ÿÁiA3|U•‚žGqi=!€!p›„^´d&UuQ]f~?^K2˜\d}S‡22HW#Ci-0§(ˆ}#"TQ‡†oH‰HBˆ^š!jY?2(T¥~~’‹  \OAKma§\?=lDCE¦…G>o[€…Š…nZ˜[EE‘(wØC–BF¸+Mˆ"Ee Q"‚ŒYi¡.U~£(¬_ŒVVÌ~š…¤ˆlŒ……o…A"CA‹z¾­–H7?F™D&vB§ß…ŠD3)tO‡(1›˜ÏWÇš\xO,~udpeŠ’Z_®^®
‹}¤?Œ@äSM{HO(‡1tL‡7©•œRBw.“LGi¦&¤…’[E’H*z ‚j,H<Ÿƒ<ˆ™ps‹\~I?XqEer -cr!¡‚gNdR‡œ9€b£EŽ>z"ŽIØƒ0³kž!(ŠQœ@8%MƒWUB GI)MOL.|BZUƒEm¿«TPžH?²7€Å1>T¬BGiŒ‚>^‰rj*S¼OW‹Cak†!PTPX;-X‡UrC‚D#E[?CŠ’ˆ!AIF&’¨vB!F[æ±?mž@i~*ItFjLy…ï‚‚ƒËU‰‹ƒ›8,a\2S‡X…sEHrMEym'Œ+C` < wQQH‚Y J;A}qcŠ›B|~¡E‹4žœ/®vŒ.'I¸!
L„¦¥„…„´˜t?3G‰7y"K<ŒˆA”Y/zK€.a‡dDG%„Œ[w,œ3˜b`
§êd€-E>‹KO•(veE¤XT&’@‚c?„W{JD~dxœQˆD‚
ST)•R4o²É?… 436XŒA4dSvyIH'@uFC…aEH%‚.u„R“€²K?H-K.v"…Gƒ6)dUœY‘@HE†T¾Qw¯^j+Ž